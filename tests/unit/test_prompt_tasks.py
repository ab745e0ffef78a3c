"""Window and eval-round building: versions follow the sync rule, ids are unique, seeds are deterministic."""

from __future__ import annotations

import pytest

from semirl.controller.prompt_tasks import build_eval_tasks, build_window_tasks
from semirl.core.wire import task_seed
from semirl.data.problems import Problem
from semirl.proto import types_pb2
from semirl.spec import RunSpec, parse_run_spec

PROBLEMS = [Problem(id=str(i), problem=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(10)]


def _spec(interval: int | str, steps: int = 7, batch: int = 3, **extra: object) -> RunSpec:
    return parse_run_spec({
        "name": "w",
        "model": {"path": "/seed"},
        "data": {"train": {"path": "train.jsonl"}, "eval": {"path": "eval.jsonl"},
                 "prompt_template": "Q: {problem}\nA:"},
        "sync": {"interval": interval},
        "train": {"steps": steps, "batch_prompts": batch, "seed": 5},
        "eval": {"samples_per_prompt": 2, "limit": 4, "max_tokens": 16},
        "sampling": {"n": 4, "temperature": 0.8, "top_p": 0.95, "max_tokens": 32},
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


def test_training_tasks_are_unseeded_and_ask_no_logprobs_by_default() -> None:
    tasks = _all_tasks(_spec(3))
    assert {t.sampling.seed for t in tasks} == {0} and not any(t.sampling.logprobs for t in tasks)


def test_seeds_deterministic_distinct_and_nonzero() -> None:
    seeded = {"n": 4, "temperature": 0.8, "top_p": 0.95, "max_tokens": 32, "seeded": True}
    first = {t.prompt_id: t.sampling.seed for t in _all_tasks(_spec(3, sampling=seeded))}
    again = {t.prompt_id: t.sampling.seed for t in _all_tasks(_spec(3, sampling=seeded))}
    assert first == again
    assert len(set(first.values())) == len(first) and 0 not in first.values()
    assert first["t1-0"] == task_seed(5, "t1-0")
    assert task_seed(6, "t1-0") != task_seed(5, "t1-0")
    # The problem schedule is deterministic too.
    assert [t.prompt for t in _all_tasks(_spec(3))] == [t.prompt for t in _all_tasks(_spec(3))]


EVAL_SETS = {"math": PROBLEMS, "amc": [Problem(id=str(i), problem=f"AMC {i}", answer=str(i)) for i in range(3)]}


def _two_set_spec(**eval_section: object) -> RunSpec:
    return _spec(3, data={
        "train": {"path": "train.jsonl"},
        "eval": [{"path": "sets/math.jsonl"}, {"path": "amc.jsonl", "name": "amc", "samples_per_prompt": 8,
                                               "answer_format": "boxed"}],
        "prompt_template": "Q: {problem}\nA:", "prompt_format": "raw",
    }, eval={"samples_per_prompt": 2, "max_tokens": 16, **eval_section})


def test_eval_round_tasks() -> None:
    spec = _spec(3)
    policy = types_pb2.PolicyRef(version=6, path=_path(6))
    tasks = build_eval_tasks("r", spec, 7, 2, {"eval": PROBLEMS}, policy)
    assert [t.prompt_id for t in tasks] == ["e7-eval-0", "e7-eval-1", "e7-eval-2", "e7-eval-3"]
    for task in tasks:
        assert task.purpose == types_pb2.TASK_PURPOSE_EVAL and task.eval_step == 7 and task.window == 2
        assert task.eval_set == "eval" and task.answer_format == types_pb2.ANSWER_FORMAT_LATEX
        assert task.prompt_format == types_pb2.PROMPT_FORMAT_CHAT
        assert task.policy.version == 6 and task.policy.path == _path(6)
        assert task.sampling.n == 2 and task.sampling.max_tokens == 16
        assert task.sampling.temperature == pytest.approx(0.6) and task.sampling.top_p == pytest.approx(0.9)
    seed_round = build_eval_tasks("r", spec, 0, 0, {"eval": PROBLEMS}, types_pb2.PolicyRef(version=0, path="/seed"))
    assert [t.prompt for t in seed_round] == [t.prompt for t in tasks]
    assert [t.sampling.seed for t in seed_round] == [t.sampling.seed for t in tasks]


def test_eval_round_covers_every_set_with_its_own_settings() -> None:
    spec = _two_set_spec()
    tasks = build_eval_tasks("r", spec, 3, 1, EVAL_SETS, types_pb2.PolicyRef(version=3, path=_path(3)))
    by_set = {name: [t for t in tasks if t.eval_set == name] for name in ("math", "amc")}
    assert len(tasks) == 10 + 3 and [len(by_set["math"]), len(by_set["amc"])] == [10, 3]
    assert {t.sampling.n for t in by_set["math"]} == {2} and {t.sampling.n for t in by_set["amc"]} == {8}
    assert {t.answer_format for t in by_set["math"]} == {types_pb2.ANSWER_FORMAT_LATEX}
    assert {t.answer_format for t in by_set["amc"]} == {types_pb2.ANSWER_FORMAT_BOXED}
    assert {t.prompt_format for t in tasks} == {types_pb2.PROMPT_FORMAT_RAW}
    assert [t.gold_answer for t in by_set["amc"]] == ["0", "1", "2"]
    # Ids are unique across sets and across rounds; the same index in two sets is two prompts.
    later = build_eval_tasks("r", spec, 6, 2, EVAL_SETS, types_pb2.PolicyRef(version=6, path=_path(6)))
    ids = [t.prompt_id for t in tasks + later]
    assert len(ids) == len(set(ids)) == 26


def test_eval_seeds_are_common_per_set_and_index_across_rounds() -> None:
    spec = _two_set_spec()
    first = build_eval_tasks("r", spec, 0, 0, EVAL_SETS, types_pb2.PolicyRef(version=0, path="/seed"))
    later = build_eval_tasks("r", spec, 6, 2, EVAL_SETS, types_pb2.PolicyRef(version=6, path=_path(6)))
    assert [(t.eval_set, t.sampling.seed) for t in first] == [(t.eval_set, t.sampling.seed) for t in later]
    seeds = [t.sampling.seed for t in first]
    assert len(set(seeds)) == len(seeds)  # prompt 0 of "math" and prompt 0 of "amc" draw differently


def test_eval_limit_applies_to_every_set() -> None:
    spec = _two_set_spec(limit=2)
    tasks = build_eval_tasks("r", spec, 0, 0, EVAL_SETS, types_pb2.PolicyRef(version=0, path="/seed"))
    assert [t.prompt_id for t in tasks] == ["e0-math-0", "e0-math-1", "e0-amc-0", "e0-amc-1"]
