"""Window and eval-round building: versions follow the sync rule, ids are unique, seeds are deterministic."""

from __future__ import annotations

import pytest

from semirl.controller.windows import build_eval_tasks, build_window_tasks, task_seed
from semirl.proto import types_pb2
from semirl.spec import RunSpec, parse_run_spec
from semirl.tasks.dataset import Problem

PROBLEMS = [Problem(id=str(i), problem=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(10)]


def _spec(interval: int | str, steps: int = 7, batch: int = 3, **extra: object) -> RunSpec:
    return parse_run_spec({
        "name": "w",
        "model": {"path": "/seed"},
        "data": {"train": {"path": "train.jsonl"}, "eval": {"path": "eval.jsonl"},
                 "prompt_template": "Q: {problem}\nA:"},
        "sampling": {"n": 4, "temperature": 0.8, "top_p": 0.95, "max_tokens": 32},
        "sync": {"interval": interval},
        "train": {"steps": steps, "batch_prompts": batch, "seed": 5},
        "eval": {"samples_per_prompt": 2, "limit": 4, "max_tokens": 16},
        **extra,
    })


def _path(version: int) -> str:
    return "/seed" if version == 0 else f"/store/runs/r/policy/v{version}"


def _all_tasks(spec: RunSpec) -> list[types_pb2.PromptTask]:
    return [t for w in range(spec.num_windows) for t in build_window_tasks("r", spec, w, PROBLEMS, _path)]


@pytest.mark.parametrize("interval", [1, 3, "offline"])
def test_window_tasks_carry_v_of_their_step(interval: int | str) -> None:
    spec = _spec(interval)
    for window in range(spec.num_windows):
        tasks = build_window_tasks("r", spec, window, PROBLEMS, _path)
        steps = list(spec.window_steps(window))
        assert len(tasks) == len(steps) * 3
        for task in tasks:
            step = int(task.prompt_id[1:].split("-")[0])
            assert step in steps
            version = spec.policy_version_for_step(step)
            assert task.policy.version == version and task.policy.path == _path(version)
            assert task.window == window and task.purpose == types_pb2.TASK_PURPOSE_TRAIN
            assert task.run_id == "r" and task.reward_source == types_pb2.REWARD_SOURCE_VERIFIER
            assert task.sampling.n == 4 and task.sampling.max_tokens == 32
            assert task.prompt.startswith("Q: What is ") and task.prompt.endswith("\nA:")
            assert task.gold_answer == str(2 * int(task.prompt.split()[3]))


def test_window_versions_per_interval() -> None:
    assert {t.policy.version for t in _all_tasks(_spec("offline"))} == {0}
    assert _spec("offline").num_windows == 1
    online = _all_tasks(_spec(1))
    assert sorted({t.policy.version for t in online}) == [0, 1, 2, 3, 4, 5, 6]
    semi = _all_tasks(_spec(3))
    assert {t.prompt_id.split("-")[0]: t.policy.version for t in semi} == {
        "t1": 0, "t2": 0, "t3": 0, "t4": 3, "t5": 3, "t6": 3, "t7": 6}


@pytest.mark.parametrize("interval", [1, 3, "offline"])
def test_ids_unique_and_cover_every_slot(interval: int | str) -> None:
    tasks = _all_tasks(_spec(interval))
    ids = [t.prompt_id for t in tasks]
    assert len(ids) == len(set(ids)) == 7 * 3
    assert set(ids) == {f"t{t}-{j}" for t in range(1, 8) for j in range(3)}


def test_seeds_deterministic_distinct_and_nonzero() -> None:
    first = {t.prompt_id: t.sampling.seed for t in _all_tasks(_spec(3))}
    again = {t.prompt_id: t.sampling.seed for t in _all_tasks(_spec(3))}
    assert first == again
    assert len(set(first.values())) == len(first) and 0 not in first.values()
    assert first["t1-0"] == task_seed(5, "t1-0")
    assert task_seed(6, "t1-0") != task_seed(5, "t1-0")
    # The problem schedule is deterministic too.
    assert [t.prompt for t in _all_tasks(_spec(3))] == [t.prompt for t in _all_tasks(_spec(3))]


def test_eval_round_tasks() -> None:
    spec = _spec(3)
    policy = types_pb2.PolicyRef(version=6, path=_path(6))
    tasks = build_eval_tasks("r", spec, 7, 2, PROBLEMS, policy)
    assert [t.prompt_id for t in tasks] == ["e7-0", "e7-1", "e7-2", "e7-3"]
    for task in tasks:
        assert task.purpose == types_pb2.TASK_PURPOSE_EVAL and task.eval_step == 7 and task.window == 2
        assert task.policy.version == 6 and task.policy.path == _path(6)
        assert task.sampling.n == 2 and task.sampling.max_tokens == 16
        assert task.sampling.temperature == pytest.approx(0.6) and task.sampling.top_p == pytest.approx(0.9)
    seed_round = build_eval_tasks("r", spec, 0, 0, PROBLEMS, types_pb2.PolicyRef(version=0, path="/seed"))
    assert [t.prompt for t in seed_round] == [t.prompt for t in tasks]
    assert [t.sampling.seed for t in seed_round] == [t.sampling.seed for t in tasks]
