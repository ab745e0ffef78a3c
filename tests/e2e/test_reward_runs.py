"""Reward-model runs end to end on the real stack, with a reward service (a real process serving the tiny reward
model trained in code, tinymodel/reward_model.py) beside the verifier: DPO against the RM raises the held-out mean
score, and a mixed run routes every prompt to its own scorer and trains on both in the same step."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import yaml
from stack_audit import assert_nothing_lost_nothing_twice, step_reports

from semirl.client import ControllerClient
from semirl.core import keys
from semirl.core.streams import PAYLOAD_FIELD
from semirl.local.stack import LocalStack
from semirl.proto import types_pb2
from semirl.tinymodel.assets import ensure_reward_task

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reward_model_dir(tiny_setup) -> Path:  # noqa: ANN001
    return Path(ensure_reward_task(tiny_setup, Path(tiny_setup.model_dir).parent).model_dir)


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[LocalStack]], reward_model_dir: Path
          ) -> Iterator[LocalStack]:
    with start_stack("rewards", generators=1, verifiers=1,
                     reward_args=["--model", str(reward_model_dir.resolve())]) as local:
        yield local


@pytest.fixture
def client(stack: LocalStack) -> ControllerClient:
    return ControllerClient(stack.url)


def example(name: str, tiny_setup: Any, reward_model_dir: Path, tmp_path: Path,  # noqa: ANN401
            **changes: dict[str, Any]) -> Path:
    """An examples/ spec with its .semirl/tiny paths pointed at the test's tiny setup."""
    data_dir = Path(tiny_setup.train_path).parent.resolve()
    text = (REPO_ROOT / "examples" / name).read_text()
    text = text.replace(".semirl/tiny/data", str(data_dir)).replace(".semirl/tiny/model",
                                                                    str(Path(tiny_setup.model_dir).resolve()))
    spec = yaml.safe_load(text.replace(".semirl/tiny/reward_model", str(reward_model_dir.resolve())))
    for section, values in changes.items():
        spec[section] = {**spec.get(section, {}), **values}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def run(client: ControllerClient, stack: LocalStack, spec: Path) -> dict[str, Any]:
    record = client.wait(client.submit(spec)["id"], timeout=800)
    assert record["state"] == "succeeded", f"{record.get('error')}\n{stack.dump_logs()}"
    return record


def test_dpo_against_the_reward_model_raises_its_held_out_score(
    stack: LocalStack, client: ControllerClient, tiny_setup, reward_model_dir: Path, tmp_path: Path  # noqa: ANN001
) -> None:
    spec = example("tiny-rm-dpo.yaml", tiny_setup, reward_model_dir, tmp_path, train={"steps": 32},
                   eval={"every": 16})
    record = run(client, stack, spec)
    evals = sorted(record["evals"], key=lambda e: e["step"])
    seed, final = evals[0], evals[-1]
    assert seed["mean_score"] is not None and seed["mean_score_per_token"] is not None
    assert final["mean_score"] - seed["mean_score"] >= 0.05, (seed, final)
    # The best checkpoint by score per token is recorded and exported beside final/.
    best = record["best"]
    assert best["metric"] == "mean_score_per_token" and best["eval_set"] == "rm-heldout"
    assert best["value"] == max(e["mean_score_per_token"] for e in evals)
    assert (Path(best["path"]) / "model.safetensors").is_file() and Path(record["final_path"]).is_dir()
    metrics = client.metrics(record["id"])
    assert all(m["groups_reward_model"] == 32 and "groups_verifier" not in m for m in metrics)
    assert_nothing_lost_nothing_twice(stack.redis.client(), record["id"])


def test_a_mixed_run_routes_every_prompt_to_its_scorer_and_trains_both_in_one_step(
    stack: LocalStack, client: ControllerClient, tiny_setup, reward_model_dir: Path, tmp_path: Path  # noqa: ANN001
) -> None:
    spec = example("tiny-mixed-dpo.yaml", tiny_setup, reward_model_dir, tmp_path, train={"steps": 4},
                   eval={"every": None, "limit": 8})
    record = run(client, stack, spec)
    run_id = record["id"]
    rc = stack.redis.client()
    scorers: Counter[tuple[int, str]] = Counter()
    for stream in (keys.SCORED, keys.EVAL_SCORED):
        for _id, fields in rc.xrange(stream):
            scored = types_pb2.ScoredGroup.FromString(fields[PAYLOAD_FIELD])
            if scored.group.task.run_id == run_id:
                scorers[(scored.group.task.reward_source, scored.scorer_id.split("-")[0])] += 1
    # Every reward-model prompt was scored by the reward service, every math prompt by the verifier.
    assert set(scorers) == {(types_pb2.REWARD_SOURCE_VERIFIER, "verifier"),
                            (types_pb2.REWARD_SOURCE_REWARD_MODEL, "reward")}
    metrics = client.metrics(run_id)
    for m in metrics:  # mixed.jsonl holds both sources half and half: each step of 32 draws from both
        assert m["groups_verifier"] > 0 and m["groups_reward_model"] > 0
        assert m["groups_verifier"] + m["groups_reward_model"] == 32
        assert m["pairs_reward_model"] > 0
    assert sum(m["pairs_verifier"] for m in metrics) > 0
    by_set = {e["eval_set"]: e for e in record["evals"] if e["step"] == 4}
    assert by_set["rm-heldout"]["mean_score"] is not None and by_set["addition"]["mean_score"] is None
    assert [r.step for r in step_reports(rc, run_id)] == [1, 2, 3, 4]
    assert_nothing_lost_nothing_twice(rc, run_id)
