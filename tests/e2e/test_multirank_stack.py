"""The stack with a 2-rank trainer (`semirl up --trainer-ranks 2`: two DeepSpeed processes, gloo on the CPU).

Real processes throughout: redis-server, controller, a vLLM generator, the math-verify verifier and a trainer
launcher with two ranks. ZeRO-3 partitions the policy and the reference over both ranks; the run trains in bf16.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx
import pytest
import torch
from stack_audit import assert_nothing_lost_nothing_twice, step_reports

from semirl.client import ControllerClient
from semirl.core.checkpoint_store import RunCheckpoints
from semirl.local.stack import LocalStack

pytestmark = [pytest.mark.stack, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def ranked_stack(start_stack: Callable[..., AbstractContextManager[LocalStack]]) -> Iterator[LocalStack]:
    with start_stack("ranked-stack", generators=1, verifiers=1, trainer_ranks=2) as local:
        yield local


def test_two_rank_zero3_bf16_run_survives_a_killed_trainer(
    ranked_stack: LocalStack, tiny_setup, write_spec  # noqa: ANN001
) -> None:
    stack = ranked_stack
    client = ControllerClient(stack.url)
    rc = stack.redis.client()
    # In memory to the generators (ZeRO-3: both ranks gather each bucket), trainer state at every sync.
    spec = write_spec("ranks", interval=2, steps=6, deepspeed={"zero_stage": 3}, checkpoint={"every": 2},
                      model={"path": str(tiny_setup.model_dir), "max_model_len": 128, "dtype": "bfloat16"})
    run_id = client.submit(spec)["id"]
    deadline = time.monotonic() + 400
    # The trainer state of step 2 follows v2's commit (decision 32): kill once it is written, so the restart
    # resumes from it rather than from the seed.
    checkpoints = RunCheckpoints(stack.store, run_id)
    while (checkpoints.latest_valid_trainer_step() or 0) < 2:
        assert time.monotonic() < deadline, stack.dump_logs()
        time.sleep(0.2)
    trainer = stack.services["trainer"]
    trainer.kill()  # the launcher and both ranks, as a node failure would
    trainer.start(stack.env())
    record = client.wait(run_id, timeout=600)
    assert record["state"] == "succeeded", stack.dump_logs()
    assert record["resumed_from_step"] >= 2
    assert [r.step for r in step_reports(rc, run_id)] == list(range(1, 7))
    assert_nothing_lost_nothing_twice(rc, run_id)
    assert "started 2 trainer ranks" in stack.tail("trainer", 2000)
    history = httpx.get(f"{stack.url}/v1/runs/{run_id}/syncs", timeout=10).json()
    assert any(s["transport"] == "broadcast" and all(t["ok"] for t in s["transfers"]) for s in history), history

    from transformers import AutoModelForCausalLM

    final = AutoModelForCausalLM.from_pretrained(str(stack.store / "runs" / run_id / "final"))
    seed = AutoModelForCausalLM.from_pretrained(str(tiny_setup.model_dir))
    assert final.dtype == torch.bfloat16  # checkpoints are written in the training dtype
    moved = [name for name, value in final.state_dict().items()
             if not torch.equal(value.float(), seed.state_dict()[name].to(torch.bfloat16).float())]
    assert moved, "the final policy equals the seed"
