"""RunSpec: the sync rule's arithmetic, defaults, and rejection of bad specs."""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from semirl.spec import MAX_EVAL_ROUNDS, MAX_STEPS, MAX_WINDOW_PROMPTS, RunSpec, parse_run_spec

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


def test_durable_checkpoints_have_their_own_cadence() -> None:
    """Trainer state (what a restart resumes from) every checkpoint.every steps, a multiple of s; by default every
    sync with storage and the first multiple of s from 20 with broadcast (the default transport)."""
    def durable(**overrides: object) -> list[int]:
        spec = _spec(train={"steps": 50, "batch_prompts": 4}, **overrides)
        return [t for t in range(1, 51) if spec.is_durable_step(t)]

    assert _spec().sync.transport == "broadcast"
    assert durable(sync={"interval": 3}) == [21, 42, 50]
    assert durable(sync={"interval": 3, "transport": "storage"}) == [*range(3, 49, 3), 50]
    assert durable(sync={"interval": 5}, checkpoint={"every": 10}) == [10, 20, 30, 40, 50]
    assert durable(sync={"interval": "offline"}, checkpoint={"every": 7}) == [7, 14, 21, 28, 35, 42, 49, 50]
    spec = _spec(train={"steps": 50, "batch_prompts": 4}, sync={"interval": 5}, checkpoint={"every": 10})
    assert [t for t in range(1, 51) if spec.is_checkpoint_step(t)] == list(range(5, 51, 5))  # commits: every sync
    with pytest.raises(ValidationError, match="checkpoint.every") as err:
        _spec(sync={"interval": 4}, checkpoint={"every": 6})
    assert err.value.errors()[0]["loc"] == ("checkpoint", "every")
    with pytest.raises(ValidationError, match="transport"):
        _spec(sync={"interval": 2, "transport": "nfs"})


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
        ({"data": {"train": {"path": "t.jsonl", "reward_source": "judge"}}}, "data.train.reward_source"),
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


def _locations(info: pytest.ExceptionInfo[ValidationError]) -> set[tuple]:
    return {tuple(e["loc"]) for e in info.value.errors()}


NON_FINITE_FIELDS = [
    ("optim", "lr"), ("optim", "adam_eps"), ("optim", "weight_decay"), ("optim", "grad_clip"),
    ("dpo", "beta"), ("dpo", "nll_coef"), ("dpo", "entropy_coef"), ("grpo", "kl_beta"), ("grpo", "clip_eps"),
    ("sampling", "temperature"), ("sampling", "top_p"), ("eval", "temperature"), ("eval", "top_p"),
]


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("section,field", NON_FINITE_FIELDS, ids=[".".join(f) for f in NON_FINITE_FIELDS])
def test_every_float_must_be_finite(section: str, field: str, value: float) -> None:
    with pytest.raises(ValidationError) as info:
        _spec(**{section: {field: value}})
    assert (section, field) in _locations(info)


@pytest.mark.parametrize("betas,loc", [
    ([math.inf, 0.95], ("optim", "betas", 0)), ([0.9, math.nan], ("optim", "betas", 1)),
    ([0.9, 1.0], ("optim", "betas")), ([-0.1, 0.95], ("optim", "betas")),
])
def test_adam_betas_are_finite_and_in_range(betas: list[float], loc: tuple) -> None:
    with pytest.raises(ValidationError) as info:
        _spec(optim={"betas": betas})
    assert loc in _locations(info)
    assert _spec(optim={"betas": [0.0, 0.999]}).optim.betas == (0.0, 0.999)


@pytest.mark.parametrize("text", ["lr: .inf", "lr: .nan", "lr: -.inf", "betas: [0.9, .nan]"])
def test_yaml_infinities_are_rejected(text: str) -> None:
    body = f"name: t\nmodel: {{path: m}}\ndata: {{train: {{path: t.jsonl}}}}\ntrain: {{steps: 3}}\noptim: {{{text}}}"
    with pytest.raises(ValidationError) as info:
        parse_run_spec(body)
    assert any(loc[:2] == ("optim", text.split(":")[0]) for loc in _locations(info))


@pytest.mark.parametrize(
    "override,loc",
    [
        ({"train": {"steps": MAX_STEPS + 1}}, ("train", "steps")),
        ({"train": {"steps": 7, "batch_prompts": 100_001}}, ("train", "batch_prompts")),
        ({"train": {"steps": 7, "micro_batch_pairs": 100_001}}, ("train", "micro_batch_pairs")),
        ({"train": {"steps": 7, "seed": 2**32}}, ("train", "seed")),
        ({"sampling": {"max_tokens": 2**20 + 1}}, ("sampling", "max_tokens")),
        ({"model": {"path": "m", "max_model_len": 2**20 + 1}}, ("model", "max_model_len")),
        ({"eval": {"max_tokens": 2**20 + 1}}, ("eval", "max_tokens")),
        ({"eval": {"limit": 10**9}}, ("eval", "limit")),
        ({"eval": {"every": MAX_STEPS + 1}}, ("eval", "every")),
        ({"checkpoint": {"keep": MAX_STEPS + 1}}, ("checkpoint", "keep")),
        ({"checkpoint": {"every": MAX_STEPS + 1}}, ("checkpoint", "every")),
        ({"optim": {"warmup_steps": MAX_STEPS + 1}}, ("optim", "warmup_steps")),
        ({"sync": {"interval": MAX_STEPS + 1}}, ("sync", "interval")),
        ({"sync": {"ref_interval": MAX_STEPS + 1}}, ("sync", "ref_interval")),
        ({"data": {"train": {"path": "t.jsonl", "limit": 10**9}}}, ("data", "train", "limit")),
        ({"data": {"train": {"path": "t.jsonl"}, "eval": [{"path": f"e{i}.jsonl"} for i in range(101)]}},
         ("data", "eval")),
    ],
)
def test_sizes_have_upper_bounds(override: dict, loc: tuple) -> None:
    with pytest.raises(ValidationError) as info:
        _spec(**override)
    assert any(found[: len(loc)] == loc for found in _locations(info)), _locations(info)


def test_the_largest_allowed_sizes_are_accepted() -> None:
    spec = _spec(train={"steps": MAX_STEPS, "batch_prompts": 1}, sync={"interval": 1000}, eval={"every": 1000},
                 checkpoint={"keep": MAX_STEPS}, optim={"warmup_steps": MAX_STEPS})
    assert spec.train.steps == MAX_STEPS and len(spec.eval_steps()) == MAX_STEPS // 1000 + 1


@pytest.mark.parametrize(
    "steps,sync,checkpoint",
    # An offline run releases all its prompts at once, so its steps are bounded by MAX_WINDOW_PROMPTS too.
    [(MAX_STEPS, {"interval": 1}, {}), (MAX_WINDOW_PROMPTS, {"interval": "offline"}, {"every": 1})],
)
def test_validation_time_does_not_grow_with_the_steps(steps: int, sync: dict, checkpoint: dict) -> None:
    """eval.every = 1 has an evaluation due at every step: a walk over them took seconds at 10M steps."""
    body = {"train": {"steps": steps, "batch_prompts": 1}, "sync": sync, "checkpoint": checkpoint}
    started = time.perf_counter()
    spec = _spec(**body, eval={"every": 1}, data={"train": {"path": "t.jsonl"}})  # no eval set: no round bound
    assert time.perf_counter() - started < 0.5
    assert spec.eval.every == 1
    started = time.perf_counter()
    with pytest.raises(ValidationError, match="evaluations"):
        _spec(**body, eval={"every": 1})
    assert time.perf_counter() - started < 0.5


def test_eval_cadence_rule_matches_a_walk_over_the_steps() -> None:
    """The arithmetic check accepts exactly the specs whose every mid-run evaluation falls on a checkpoint."""
    for steps, interval, every in itertools.product(range(1, 13), [1, 2, 3, 5, "offline"], range(1, 14)):
        body = {"sync": {"interval": interval}, "train": {"steps": steps, "batch_prompts": 1}}
        base = _spec(**body)
        walk_ok = all(base.is_checkpoint_step(t) for t in range(every, steps, every))
        try:
            _spec(**body, eval={"every": every})
        except ValidationError:
            accepted = False
        else:
            accepted = True
        assert accepted == walk_ok, (steps, interval, every)


def test_evaluations_and_prompts_released_at_once_are_bounded() -> None:
    with pytest.raises(ValidationError, match="evaluations"):
        _spec(train={"steps": MAX_STEPS, "batch_prompts": 1}, eval={"every": MAX_STEPS // (MAX_EVAL_ROUNDS + 1)})
    with pytest.raises(ValidationError, match="released at once"):
        _spec(sync={"interval": "offline"}, train={"steps": MAX_WINDOW_PROMPTS // 64 + 1, "batch_prompts": 64})
    with pytest.raises(ValidationError, match="released at once"):
        _spec(sync={"interval": 20_000}, train={"steps": 40_000, "batch_prompts": 64})
    # A window longer than the run releases only the run's steps.
    assert _spec(sync={"interval": 20_000}, train={"steps": 100, "batch_prompts": 64}).num_windows == 1


@pytest.mark.parametrize(("sync", "accepted"), [
    # strict windows: step t trains on v(t) only
    ({"interval": 1}, {1: [0], 2: [1], 5: [4]}),
    ({"interval": 3}, {1: [0], 3: [0], 4: [3], 7: [6]}),
    # max_staleness k: v(t) - k*s .. v(t), never below the seed
    ({"interval": 1, "max_staleness": 0}, {1: [0], 2: [1], 5: [4]}),
    ({"interval": 1, "max_staleness": 1}, {1: [0], 2: [0, 1], 5: [3, 4]}),
    ({"interval": 1, "max_staleness": 2}, {2: [0, 1], 5: [2, 3, 4]}),
    ({"interval": 3, "max_staleness": 1}, {1: [0], 4: [0, 1, 2, 3], 7: [3, 4, 5, 6]}),
])
def test_acceptance_rule_is_v_t_or_k_syncs_behind(sync: dict, accepted: dict[int, list[int]]) -> None:
    spec = _spec(sync=sync)
    for step, versions in accepted.items():
        assert [v for v in range(0, 8) if spec.accepts_version(step, v)] == versions, step


@pytest.mark.parametrize(("sync", "due_at"), [
    # the newest committed version at which each window may be released
    ({"interval": 1}, [0, 1, 2, 3, 4, 5, 6]),
    ({"interval": 1, "max_staleness": 1}, [0, 0, 1, 2, 3, 4, 5]),
    ({"interval": 1, "max_staleness": 3}, [0, 0, 0, 0, 1, 2, 3]),
    ({"interval": 3}, [0, 3, 6]),
    ({"interval": 3, "max_staleness": 1}, [0, 0, 3]),
    ({"interval": "offline"}, [0]),
])
def test_windows_are_due_when_their_first_step_accepts_the_newest_commit(sync: dict, due_at: list[int]) -> None:
    spec = _spec(sync=sync)
    assert spec.num_windows == len(due_at)
    for window, version in enumerate(due_at):
        assert spec.window_due(window, version), (window, version)
        assert version == 0 or not spec.window_due(window, version - 1), (window, version)


def test_max_staleness_needs_a_synced_run_and_bounds_the_backlog() -> None:
    with pytest.raises(ValidationError) as info:
        _spec(sync={"interval": "offline", "max_staleness": 1})
    assert "max_staleness" in str(info.value) and _locations(info) == {("sync", "max_staleness")}
    batch = 50_000  # x (k + 1) windows of s = 5 steps: k = 3 releases exactly MAX_WINDOW_PROMPTS at once
    assert 4 * 5 * batch == MAX_WINDOW_PROMPTS
    ok = _spec(sync={"interval": 5, "max_staleness": 3}, train={"steps": 40, "batch_prompts": batch})
    assert ok.sync.asynchronous
    with pytest.raises(ValidationError, match="max_staleness"):
        _spec(sync={"interval": 5, "max_staleness": 4}, train={"steps": 40, "batch_prompts": batch})


def test_every_algorithm_and_sync_mode_is_accepted_or_refused_naming_the_field() -> None:
    """The whole grid of algorithm x sync.interval x max_staleness: accepted ones run (tests/e2e); the only
    refusal is an offline run with a staleness bound, and it names sync.max_staleness."""
    for algorithm, interval, staleness in itertools.product(("dpo", "grpo"), (1, 3, "offline"), (None, 0, 2)):
        sync = {"interval": interval, **({} if staleness is None else {"max_staleness": staleness})}
        if interval == "offline" and staleness is not None:
            with pytest.raises(ValidationError) as info:
                _spec(algorithm=algorithm, sync=sync)
            assert _locations(info) == {("sync", "max_staleness")}
            continue
        spec = _spec(algorithm=algorithm, sync=sync)
        assert spec.sample_logprobs == (algorithm == "grpo" and not (interval == 1 and not staleness))


def test_zero_plus_plus_hierarchical_partitioning_is_zero3_and_divides_the_world() -> None:
    from semirl.trainer.engine import deepspeed_config, reference_config

    with pytest.raises(ValidationError) as info:
        _spec(deepspeed={"zero_stage": 2, "zero_hpz_partition_size": 8})
    assert ("deepspeed", "zero_hpz_partition_size") in _locations(info)
    spec = _spec(deepspeed={"zero_stage": 3, "zero_hpz_partition_size": 8})
    assert deepspeed_config(spec, 32)["zero_optimization"]["zero_hpz_partition_size"] == 8
    assert reference_config(spec, 32)["zero_optimization"]["zero_hpz_partition_size"] == 8
    plain = deepspeed_config(_spec(deepspeed={"zero_stage": 3}), 32)
    assert "zero_hpz_partition_size" not in plain["zero_optimization"]
    with pytest.raises(ValueError, match="does not divide the trainer's 12 ranks"):
        deepspeed_config(spec, 12)
