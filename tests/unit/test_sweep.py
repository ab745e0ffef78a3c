"""`semirl sweep`'s pieces without a stack: the grid, the cell specs, the figures kept per run and the table.

The generator clock reads a real Prometheus exporter (prometheus_client's HTTP server) on a loopback port."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Histogram

from semirl.core.redis_server import free_port
from semirl.core.telemetry import serve_metrics
from semirl.sweep.grid import DEFAULT_CONSTANTS, DEFAULT_GRID, Cell, Setting, build_grid, cell_spec, split_values
from semirl.sweep.report import Estimate, markdown_table, ordering, setting_rows
from semirl.sweep.results import GeneratorClock, collect
from semirl.sweep.runner import SweepDirectory, SweepPlan, prepare

DEMO_SPEC = Path(__file__).resolve().parents[2] / "examples" / "tiny-math-dpo.yaml"


def test_values_split_on_top_level_commas_only() -> None:
    assert split_values("1, 4,offline") == ["1", "4", "offline"]
    assert split_values("[0.9,0.95],[0.9,0.99]") == ["[0.9,0.95]", "[0.9,0.99]"]


def test_multi_valued_keys_make_the_product_and_single_values_apply_to_all() -> None:
    settings, constants = build_grid(["sync.interval=1,offline", "algorithm=dpo,grpo", "train.steps=8"], seeds=2)
    assert [s.overrides for s in settings] == [
        {"sync.interval": 1, "algorithm": "dpo"}, {"sync.interval": 1, "algorithm": "grpo"},
        {"sync.interval": "offline", "algorithm": "dpo"}, {"sync.interval": "offline", "algorithm": "grpo"}]
    assert constants == {"train.steps": 8}


def test_without_a_multi_valued_key_the_default_grid_runs_with_the_constants_on_top() -> None:
    settings, constants = build_grid(["train.steps=12"], seeds=3)
    assert [s.name for s in settings] == [s.name for s in DEFAULT_GRID]
    assert constants == {**DEFAULT_CONSTANTS, "train.steps": 12}


def test_one_value_for_a_key_the_default_grid_varies_is_refused_not_ignored() -> None:
    with pytest.raises(ValueError, match="--set sync.interval: the default grid varies this key"):
        build_grid(["sync.interval=4"], seeds=1)


@pytest.mark.parametrize("bad", ["sync.interval", "=1,2", "sync..interval=1", "sync.interval=1,,2",
                                 "sync.interval=[1,2"])
def test_a_malformed_assignment_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="--set"):
        build_grid([bad], seeds=1)


def test_zero_seeds_is_refused() -> None:
    with pytest.raises(ValueError, match="--seeds"):
        build_grid([], seeds=0)


def test_every_cell_of_the_default_grid_is_a_valid_spec_with_its_seed_and_a_run_name_of_its_own() -> None:
    settings, constants = build_grid([], seeds=3)
    plan = SweepPlan(base_spec=yaml.safe_load(DEMO_SPEC.read_text()), constants=constants, settings=settings, seeds=3)
    specs = plan.specs("a1b2c3")
    assert len(specs) == 15
    grpo = specs["grpo-s-1-seed2"]
    assert grpo["algorithm"] == "grpo" and grpo["sync"]["interval"] == 1
    assert grpo["train"]["seed"] == 2 and grpo["data"]["shuffle_seed"] == 2
    assert grpo["train"]["steps"] == 40 and grpo["eval"]["every"] == 10
    assert specs["offline-dpo-seed0"]["sync"]["interval"] == "offline"
    assert len({s["name"] for s in specs.values()}) == 15
    assert grpo["name"] == "sweep-a1b2c3-014-grpo-s-1-seed2"
    # Seed-major order: a sweep cut short has compared every setting at seed 0 first.
    assert [c.seed for c in plan.cells()[:5]] == [0] * 5


def test_an_override_the_spec_refuses_names_the_setting_and_the_field_and_writes_nothing(tmp_path: Path) -> None:
    base = yaml.safe_load(DEMO_SPEC.read_text())
    plan = SweepPlan(base_spec=base, constants={}, settings=[Setting(name="bad", overrides={"sync.interval": 0})],
                     seeds=1)
    with pytest.raises(ValueError, match="setting 'bad', seed 0: sync.interval: .*must be 1"):
        prepare(plan, SweepDirectory(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # so the corrected command is not refused as another sweep


def test_an_override_through_a_scalar_is_refused() -> None:
    cell = Cell(setting=Setting(name="x", overrides={"name.part": 1}), seed=0)
    with pytest.raises(ValueError, match="name is not a mapping"):
        cell_spec({"name": "run"}, {}, cell, "run-x")


def _record(**overrides: Any) -> dict[str, Any]:
    record = {
        "id": "run-1", "state": "succeeded", "created_at": 90.0, "started_at": 100.0, "finished_at": 130.0,
        "step": 2, "syncs": 1, "error": None,
        "spec": {"train": {"batch_prompts": 4}, "sampling": {"n": 8}},
        "evals": [
            {"eval_set": "addition", "step": 0, "accuracy": 0.5, "mean_response_tokens": 20.0},
            {"eval_set": "addition", "step": 2, "accuracy": 0.75, "mean_response_tokens": 18.0},
        ],
    }
    return {**record, **overrides}


METRICS = [
    {"step": 1, "time": 110.0, "wait_seconds": 4.0, "step_seconds": 2.0, "samples_per_s": 16.0, "reward_mean": 0.5,
     "response_tokens": 20.0, "entropy": 0.2},
    {"step": 2, "time": 120.0, "wait_seconds": 1.0, "step_seconds": 4.0, "samples_per_s": 6.0, "reward_mean": 0.6,
     "response_tokens": 19.0, "entropy": float("nan")},
]


def test_a_run_is_kept_with_its_efficiency_figures() -> None:
    result = collect("k", "s", 0, _record(), METRICS, busy_seconds=24.0, observed_s=40.0, generators=2)
    # Training ran 20 s (start to the last step's report); the steps trained 16 x 2 + 6 x 4 samples.
    assert result.train_samples_per_s == pytest.approx(56 / 20)
    assert result.trainer_wait_fraction == pytest.approx(5 / 20)
    # 24 busy seconds of the 40 s observed x 2 generators.
    assert result.generator_idle_fraction == pytest.approx(1 - 24 / 80)
    assert result.wall_s == 30.0
    assert [(e.step, e.elapsed_s) for e in result.evals] == [(0, 0.0), (2, 20.0)]
    # A metric that is not finite is left out of the curve, not kept as NaN.
    assert result.curve[1].values == {"reward_mean": 0.6, "response_tokens": 19.0}
    unmeasured = collect("k", "s", 0, _record(), METRICS, busy_seconds=None, observed_s=40.0, generators=2)
    assert unmeasured.generator_idle_fraction is None
    # An evaluated step with no step report has no time, rather than time 0.
    assert collect("k", "s", 0, _record(), METRICS[:1], None, 40.0, 1).evals[1].elapsed_s is None


def test_the_estimate_is_the_mean_and_its_standard_error() -> None:
    estimate = Estimate.of([0.6, 0.7, 0.8])
    assert estimate is not None
    assert estimate.mean == pytest.approx(0.7)
    assert estimate.stderr == pytest.approx(0.1 / math.sqrt(3))
    one = Estimate.of([0.5])
    assert one is not None and one.stderr is None and one.text(100) == "50.0"
    assert Estimate.of([]) is None


def test_the_table_averages_seeds_per_setting_and_orders_by_final_accuracy() -> None:
    settings = [Setting(name="offline"), Setting(name="online")]
    results = [
        collect("a0", "offline", 0, _record(evals=[
            {"eval_set": "addition", "step": 0, "accuracy": 0.5, "mean_response_tokens": 20.0},
            {"eval_set": "addition", "step": 2, "accuracy": 0.55, "mean_response_tokens": 20.0}]),
            METRICS, None, 40.0, 1),
        collect("b0", "online", 0, _record(), METRICS, None, 40.0, 1),
        collect("b1", "online", 1, _record(evals=[
            {"eval_set": "addition", "step": 0, "accuracy": 0.5, "mean_response_tokens": 20.0},
            {"eval_set": "addition", "step": 2, "accuracy": 0.85, "mean_response_tokens": 20.0}]),
            METRICS, None, 40.0, 1),
        collect("b2", "online", 2, _record(state="failed"), METRICS, None, 40.0, 1),
    ]
    rows = setting_rows(settings, results)
    online = rows[1]
    assert online.seeds == 2 and online.failed == 1
    assert online.eval_sets[0].accuracy is not None and online.eval_sets[0].accuracy.mean == pytest.approx(0.8)
    assert online.eval_sets[0].gain is not None and online.eval_sets[0].gain.mean == pytest.approx(0.3)
    assert online.generator_idle_fraction is None
    table = markdown_table(rows)
    assert "| online | 2 (1 failed) | 80.0 ± 5.0 | 30.0 ± 5.0 |" in table
    assert "| offline | 1 | 55.0 | 5.0 |" in table
    assert ordering(rows) == "by final accuracy on addition: offline 55.0 < online 80.0"


def test_the_generator_clock_sums_generate_and_reload_seconds_over_generators() -> None:
    servers, urls = [], []
    for seconds in (1.5, 2.0):
        registry = CollectorRegistry()
        Histogram("semirl_generator_generate_seconds", "h", registry=registry).observe(seconds)
        Histogram("semirl_generator_reload_seconds", "h", registry=registry).observe(0.25)
        Histogram("semirl_generator_other_seconds", "not busy time", registry=registry).observe(100.0)
        port = free_port()
        servers.append(serve_metrics(port, registry=registry, host="127.0.0.1"))
        urls.append(f"http://127.0.0.1:{port}/metrics")
    try:
        assert GeneratorClock(urls).busy_seconds() == pytest.approx(1.5 + 2.0 + 0.5)
        assert GeneratorClock([]).busy_seconds() is None
        assert GeneratorClock([f"http://127.0.0.1:{free_port()}/metrics"]).busy_seconds() is None
    finally:
        for server in servers:
            server.close()


def test_a_results_directory_of_another_sweep_is_refused(tmp_path: Path) -> None:
    base = yaml.safe_load(DEMO_SPEC.read_text())
    plan = SweepPlan(base_spec=base, constants={}, settings=[Setting(name="a")], seeds=1)
    directory = SweepDirectory(tmp_path)
    sweep_id = directory.sweep_id()
    directory.claim(plan, sweep_id)
    assert SweepDirectory(tmp_path).sweep_id() == sweep_id  # the same plan resumes under the same id
    SweepDirectory(tmp_path).claim(plan, sweep_id)
    with pytest.raises(ValueError, match="holds another sweep"):
        SweepDirectory(tmp_path).claim(plan.model_copy(update={"seeds": 2}), sweep_id)


def test_a_set_the_reward_model_scores_gets_its_score_and_score_per_token_columns() -> None:
    scored = [{"eval_set": "chat", "step": step, "accuracy": 0.0, "mean_score": score, "mean_score_per_token": per,
               "mean_response_tokens": 20.0} for step, score, per in ((0, 0.5, 0.02), (2, 0.75, 0.03))]
    math_set = [{"eval_set": "addition", "step": 2, "accuracy": 0.5, "mean_response_tokens": 20.0}]
    result = collect("a0", "rm", 0, _record(evals=scored + math_set), METRICS, None, 40.0, 1)
    table = markdown_table(setting_rows([Setting(name="rm")], [result]))
    header = table.splitlines()[0]
    assert "chat: RM score | chat: score / token" in header
    assert "addition: RM score" not in header
    # The math set was evaluated at step 2 only: no gain over a seed it never measured.
    assert "| rm | 1 | 0.0 | 0.0 | 0.750 | 0.0300 | 50.0 | – |" in table
