"""GRPO, asynchronous (bounded-staleness) training and offline DPO from a static preference dataset, end to end on
the real multi-process stack (real redis-server, vLLM, math-verify, DeepSpeed, gRPC and REST; one generator, so
a run here gets the machine's cores as `semirl demo` does). Learning is measured on held-out prompts: the eval
split shares no operand pair with the train split (data/synthetic.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file
from stack_audit import assert_nothing_lost_nothing_twice, step_reports

from semirl.client import ControllerClient
from semirl.core import keys
from semirl.core.streams import PAYLOAD_FIELD, publish
from semirl.local.stack import LocalStack
from semirl.proto import types_pb2

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[LocalStack]]) -> Iterator[LocalStack]:
    with start_stack("algorithms", generators=1, verifiers=1) as local:
        yield local


@pytest.fixture
def client(stack: LocalStack) -> ControllerClient:
    return ControllerClient(stack.url)


def example_spec(name: str, tiny_setup: Any, tmp_path: Path, **changes: dict[str, Any]) -> Path:  # noqa: ANN401
    """An examples/ spec on the test's tiny setup, sections updated by `changes`."""
    spec = yaml.safe_load((REPO_ROOT / "examples" / name).read_text())
    spec["model"]["path"] = str(tiny_setup.model_dir)
    data_dir = Path(tiny_setup.train_path).parent
    spec["data"]["train"]["path"] = str(data_dir / Path(spec["data"]["train"]["path"]).name)
    spec["data"]["eval"][0]["path"] = str(tiny_setup.eval_path)
    for section, values in changes.items():
        spec[section] = {**spec.get(section, {}), **values}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def run(client: ControllerClient, stack: LocalStack, spec: Path, timeout: float = 800) -> dict[str, Any]:
    record = client.wait(client.submit(spec)["id"], timeout=timeout)
    assert record["state"] == "succeeded", f"{record.get('error')}\n{stack.dump_logs()}"
    return record


def accuracy_gain(record: dict[str, Any]) -> tuple[float, float]:
    evals = sorted(record["evals"], key=lambda e: e["step"])
    return evals[0]["accuracy"], evals[-1]["accuracy"]


def test_grpo_raises_held_out_accuracy_by_ten_points(
    stack: LocalStack, client: ControllerClient, tiny_setup, tmp_path: Path  # noqa: ANN001
) -> None:
    """The paper's GRPO (on-policy, s = 1, k3 KL to the seed) on examples/tiny-math-grpo.yaml."""
    record = run(client, stack, example_spec("tiny-math-grpo.yaml", tiny_setup, tmp_path, eval={"every": 40}))
    seed, final = accuracy_gain(record)
    assert final - seed >= 0.10, (seed, final)
    metrics = client.metrics(record["id"])
    trained = [m for m in metrics if m.get("pairs", 0) > 0]
    assert len(trained) >= 30
    # On-policy: the importance ratio is exactly 1 and nothing is clipped; the KL to the seed grows from 0.
    assert all(m["ratio_mean"] == pytest.approx(1.0) and m["clip_fraction"] == 0.0 for m in trained)
    assert all(m["staleness_max"] == 0.0 for m in metrics)
    assert trained[-1]["kl"] > trained[0]["kl"] >= 0.0 and trained[0]["advantage_abs"] > 0
    assert_nothing_lost_nothing_twice(stack.redis.client(), record["id"])


def test_asynchronous_run_never_trains_a_group_more_than_one_version_old_and_reports_drops(
    stack: LocalStack, client: ControllerClient, tiny_setup, tmp_path: Path  # noqa: ANN001
) -> None:
    """sync.max_staleness 1 with s = 1 (off-policy GRPO: the clipped ratio against the generator's logprobs).

    One group is published by the test itself, as a generator that kept an old version would have sent it: a
    scored group for step 6 sampled by v0, which step 6 (accepting v4 and v5) must drop as stale and report."""
    steps = 8
    spec = example_spec("tiny-math-grpo.yaml", tiny_setup, tmp_path, sync={"max_staleness": 1},
                        train={"steps": steps, "batch_prompts": 8}, eval={"every": None, "limit": 16})
    rc = stack.redis.client()
    run_id = client.submit(spec)["id"]
    task = types_pb2.PromptTask(run_id=run_id, prompt_id="t6-0", purpose=types_pb2.TASK_PURPOSE_TRAIN, train_step=6,
                                reward_source=types_pb2.REWARD_SOURCE_VERIFIER)
    late = types_pb2.SampleGroup(task=task, prompt_token_ids=[1, 5, 6], policy_version=0, samples=[
        types_pb2.Sample(token_ids=[7, 2], logprobs=[-1.0, -1.0]), types_pb2.Sample(token_ids=[8, 2],
                                                                                    logprobs=[-1.0, -1.0])])
    publish(rc, keys.SCORED, types_pb2.ScoredGroup(group=late, rewards=[1.0, 0.0]))
    record = client.wait(run_id, timeout=600)
    assert record["state"] == "succeeded", f"{record.get('error')}\n{stack.dump_logs()}"

    reports = step_reports(rc, run_id)
    assert [r.step for r in reports] == list(range(1, steps + 1))
    trained_versions = {}
    for report in reports:
        for use in report.groups:
            if use.skip_reason.startswith("dropped"):
                continue
            assert 0 <= (report.step - 1) - use.policy_version <= 1, (report.step, use)
            trained_versions[use.prompt_id] = use.policy_version
    dropped = [(r.step, g.prompt_id, g.policy_version, g.skip_reason) for r in reports for g in r.groups
               if g.skip_reason.startswith("dropped")]
    assert ("t6-0", 0, "dropped_stale") in [d[1:] for d in dropped], dropped
    assert trained_versions["t6-0"] >= 4  # the prompt itself was trained, on the generator's group
    assert record["counters"]["groups_dropped"] == len(dropped)
    metrics = client.metrics(run_id)
    assert max(m["staleness_max"] for m in metrics) <= 1.0
    assert all(m["ratio_max"] > 0 for m in metrics if m.get("pairs", 0) > 0)  # off-policy: real ratios
    assert record["syncs"] == steps - 1  # every commit went to the generators at once


def test_offline_dpo_from_a_static_dataset_calls_no_generator_for_training(
    stack: LocalStack, client: ControllerClient, tiny_setup, tmp_path: Path  # noqa: ANN001
) -> None:
    """examples/tiny-math-dpo-static.yaml: the trainer reads (prompt, chosen, rejected) rows; the prompts stream
    carries evaluation tasks only, and the final policy differs from the seed."""
    rc = stack.redis.client()
    spec = example_spec("tiny-math-dpo-static.yaml", tiny_setup, tmp_path, train={"steps": 6},
                        checkpoint={"every": 3}, eval={"every": None, "limit": 16})
    record = run(client, stack, spec)
    run_id = record["id"]
    tasks = [types_pb2.PromptTask.FromString(f[PAYLOAD_FIELD]) for _id, f in rc.xrange(keys.PROMPTS)]
    mine = [t for t in tasks if t.run_id == run_id]
    assert mine and all(t.purpose == types_pb2.TASK_PURPOSE_EVAL for t in mine)
    assert all(member.startswith(b"e") for member in rc.smembers(keys.done_key(run_id, "generate")))
    reports = step_reports(rc, run_id)
    assert [r.step for r in reports] == list(range(1, 7))
    assert all(r.metrics["pairs"] == 32 and r.metrics["skipped"] == 0 for r in reports)
    assert record["syncs"] == 0 and record["windows_released"] == 0
    seed = load_file(str(Path(tiny_setup.model_dir) / "model.safetensors"))
    final = load_file(str(Path(record["final_path"]) / "model.safetensors"))
    assert max(float((final[k].float() - seed[k].float()).abs().max()) for k in seed) > 1e-4  # ~lr per step
    assert all(torch.isfinite(final[k]).all() for k in final)


@pytest.mark.parametrize(("algorithm", "sync"), [
    ("grpo", {"interval": 2}),                         # off-policy inside a window: clipped ratio
    ("grpo", {"interval": "offline"}),                 # off-policy against the seed's samples
    ("grpo", {"interval": 2, "max_staleness": 1}),
    ("dpo", {"interval": 1, "max_staleness": 1}),
    ("dpo", {"interval": 2, "max_staleness": 0}),
])
def test_every_other_accepted_combination_runs_within_its_acceptance_rule(
    stack: LocalStack, client: ControllerClient, write_spec, algorithm: str, sync: dict  # noqa: ANN001
) -> None:
    """The combinations of algorithm x sync.interval x max_staleness the tests above do not run (the refused one
    is a 422: tests/unit/test_spec.py). Each finishes, trains every step on versions its rule accepts, and loses
    nothing."""
    from semirl.spec import parse_run_spec

    name = f"{algorithm}-{sync['interval']}-{sync.get('max_staleness', 'strict')}"
    path = write_spec(name, interval=sync["interval"], steps=4, algorithm=algorithm, sync=sync)
    spec = parse_run_spec(path.read_text())
    record = run(client, stack, path)
    rc = stack.redis.client()
    reports = step_reports(rc, record["id"])
    assert [r.step for r in reports] == [1, 2, 3, 4]
    for report in reports:
        used = [g for g in report.groups if not g.skip_reason.startswith("dropped")]
        assert used and all(spec.accepts_version(report.step, g.policy_version) for g in used), report.step
    if algorithm == "grpo":
        trained = [m for m in client.metrics(record["id"]) if m.get("pairs", 0) > 0]
        assert trained and all(m["ratio_max"] > 0 for m in trained)
    assert_nothing_lost_nothing_twice(rc, record["id"])
