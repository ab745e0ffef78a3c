"""RunSpec: the sync rule's arithmetic, defaults, and rejection of bad specs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from semirl.spec import RunSpec, parse_run_spec

REPO_ROOT = Path(__file__).resolve().parents[2]


def _spec(**overrides: object) -> RunSpec:
    base: dict = {
        "name": "t",
        "model": {"path": "m"},
        "data": {"train": {"path": "train.jsonl"}, "eval": {"path": "eval.jsonl"}},
        "train": {"steps": 7, "batch_prompts": 4},
    }
    base.update(overrides)
    return parse_run_spec(base)


@pytest.mark.parametrize(
    "interval,expected",
    [(1, [0, 1, 2, 3, 4, 5, 6]), (3, [0, 0, 0, 3, 3, 3, 6]), ("offline", [0] * 7)],
)
def test_policy_version_for_step_follows_the_sync_rule(interval: int | str, expected: list[int]) -> None:
    spec = _spec(sync={"interval": interval})
    assert [spec.policy_version_for_step(t) for t in range(1, 8)] == expected


def test_windows_partition_the_steps() -> None:
    spec = _spec(sync={"interval": 3})
    windows = [list(spec.window_steps(w)) for w in range(spec.num_windows)]
    assert windows == [[1, 2, 3], [4, 5, 6], [7]]
    offline = _spec(sync={"interval": "offline"})
    assert offline.num_windows == 1 and list(offline.window_steps(0)) == list(range(1, 8))


def test_checkpoint_and_reference_cadence() -> None:
    spec = _spec(sync={"interval": 3})
    assert [t for t in range(1, 8) if spec.is_checkpoint_step(t)] == [3, 6, 7]
    assert spec.ref_sync_interval == 3
    assert _spec(sync={"interval": "offline"}).ref_sync_interval is None
    assert _spec(sync={"interval": 3, "ref_interval": "never"}).ref_sync_interval is None
    assert _spec(sync={"interval": 3}, eval={"every": 3}).eval_steps() == [0, 3, 6, 7]
    with pytest.raises(ValidationError, match="eval.every"):
        _spec(sync={"interval": 3}, eval={"every": 2})  # step 2 is never committed, so it cannot be evaluated


def test_paper_defaults() -> None:
    spec = _spec()
    assert (spec.optim.lr, spec.optim.adam_eps, spec.optim.grad_clip, spec.dpo.beta) == (1e-6, 1e-4, 0.1, 0.1)
    assert (spec.eval.temperature, spec.eval.top_p) == (0.6, 0.9)


@pytest.mark.parametrize(
    "override,field",
    [
        ({"sync": {"interval": 0}}, "sync.interval"),
        ({"train": {"steps": 5, "batch_prompts": -1}}, "train.batch_prompts"),
        ({"algorithm": "ppo"}, "algorithm"),
        ({"name": "../escape"}, "name"),
        ({"checkpoint": {"subdir": "../../etc"}}, "checkpoint.subdir"),
        ({"train": {"steps": "abc"}}, "train.steps"),
        ({"sampling": {"n": 1}}, "sampling.n"),
        ({"unknown": 1}, "unknown"),
        ({"data": {"train": {"path": "t.jsonl", "reward_source": "reward_model"}}}, "data.train.reward_source"),
    ],
)
def test_bad_specs_name_the_field(override: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        _spec(**override)
    locations = {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}
    assert any(loc.startswith(field) for loc in locations), locations


def _eval_sets(value: object) -> list:
    return _spec(data={"train": {"path": "train.jsonl"}, "eval": value}).data.eval


def test_eval_sets_one_mapping_or_a_list_named_by_default_after_the_file() -> None:
    (single,) = _eval_sets({"path": "data/math500.jsonl", "limit": 50})
    assert (single.name, single.limit, single.samples_per_prompt) == ("math500", 50, None)
    sets = _eval_sets([{"path": "/d/math500.jsonl"}, {"path": "amc23.test.jsonl", "samples_per_prompt": 32,
                                                      "answer_format": "boxed"}, {"path": "x.jsonl", "name": "X1"}])
    assert [(d.name, d.samples_per_prompt, d.answer_format) for d in sets] == [
        ("math500", None, "latex"), ("amc23", 32, "boxed"), ("X1", None, "latex")]
    assert _eval_sets(None) == [] and _spec(data={"train": {"path": "t.jsonl"}}).eval_steps() == []


@pytest.mark.parametrize(
    "value,message",
    [
        ([{"path": "a/math.jsonl"}, {"path": "b/math.jsonl"}], "unique"),  # two default names collide
        ([{"path": "a.jsonl", "name": "s"}, {"path": "b.jsonl", "name": "s"}], "unique"),
        ([{"path": "a.jsonl", "name": "no spaces"}], "pattern"),
        ([{"path": "a.jsonl", "samples_per_prompt": 0}], "greater than 0"),
        ([{"path": "a.jsonl", "limit": 0}], "greater than 0"),
        ([{"path": "a.jsonl", "answer_format": "plain"}], "latex"),
    ],
)
def test_bad_eval_sets_are_rejected(value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        _eval_sets(value)
    assert all(e["loc"][:2] == ("data", "eval") for e in info.value.errors())


def test_path_checks_only_with_context(tmp_path: Path) -> None:
    _spec()  # no context: paths are not checked
    with pytest.raises(ValidationError) as info:
        parse_run_spec({**_spec().model_dump(mode="json"), "model": {"path": str(tmp_path / "nope")}}, check_paths=True)
    assert any(e["loc"][:2] == ("model", "path") for e in info.value.errors())


def test_examples_parse() -> None:
    for path in (REPO_ROOT / "examples").glob("*.yaml"):
        parse_run_spec(path.read_text())
