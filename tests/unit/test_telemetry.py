"""The metrics exporter (core/telemetry.py), each service's metric set, and the controller's scrape-time collector
against a real Controller on a real redis-server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from semirl.controller.controller import Controller
from semirl.controller.fanout import ReloadOutcome
from semirl.controller.metrics import ControllerCollector
from semirl.core import keys, telemetry
from semirl.core.redis_server import free_port, start_redis
from semirl.core.runstate import load_run, save_run
from semirl.spec import parse_run_spec

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of a /metrics page: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def collect(registry: CollectorRegistry) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in registry.collect() for s in m.samples}


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


# --- the exporter ---------------------------------------------------------------------------------------


def test_metrics_port_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(telemetry.METRICS_PORT_ENV, raising=False)
    assert telemetry.metrics_port_from_env() == 0  # off outside the cluster
    assert telemetry.metrics_port_from_env(default=1234) == 1234
    monkeypatch.setenv(telemetry.METRICS_PORT_ENV, "9090")
    assert telemetry.metrics_port_from_env() == 9090
    monkeypatch.setenv(telemetry.METRICS_PORT_ENV, " ")
    assert telemetry.metrics_port_from_env() == 0
    for bad in ("metrics", "70000", "-1"):
        monkeypatch.setenv(telemetry.METRICS_PORT_ENV, bad)
        with pytest.raises(ValueError, match=telemetry.METRICS_PORT_ENV):
            telemetry.metrics_port_from_env()


def test_port_zero_disables_the_exporter() -> None:
    assert telemetry.serve_metrics(0) is None
    assert telemetry.serve_metrics(0, registry=CollectorRegistry()) is None
    with pytest.raises(ValueError):
        telemetry.serve_metrics(-1)


def test_serves_its_registry_over_http_until_closed() -> None:
    registry = telemetry.new_registry()
    hits = Counter("semirl_test_hits", "test counter", ["kind"], registry=registry)
    hits.labels("a").inc(3)
    server = telemetry.serve_metrics(free_port(), host="127.0.0.1", registry=registry)
    assert server is not None
    try:
        samples = scrape(server.url)
        assert samples[("semirl_test_hits_total", (("kind", "a"),))] == 3.0
        assert "process_cpu_seconds_total" in names(samples)  # new_registry() has the process collectors
        assert "python_info" in names(samples)
        hits.labels("a").inc()
        assert scrape(server.url)[("semirl_test_hits_total", (("kind", "a"),))] == 4.0
        with pytest.raises(OSError):  # the port is taken: fail loudly at start-up
            telemetry.serve_metrics(server.port, host="127.0.0.1")
    finally:
        server.close()
    server.close()  # idempotent
    with pytest.raises(urllib.error.URLError):
        scrape(server.url)


def test_extra_collectors_are_added_and_removed_on_close() -> None:
    registry = CollectorRegistry()

    class Fixed:
        def collect(self) -> Iterator:
            from prometheus_client.core import GaugeMetricFamily

            family = GaugeMetricFamily("semirl_test_fixed", "fixed")
            family.add_metric([], 7.0)
            yield family

    for _ in range(2):  # serving the same registry again works: close() unregistered the collector
        fixed = Fixed()
        server = telemetry.serve_metrics(free_port(), host="127.0.0.1", registry=registry, extra_collectors=[fixed])
        assert server is not None
        try:
            assert scrape(server.url)[("semirl_test_fixed", ())] == 7.0
        finally:
            server.close()
        assert names(collect(registry)) == set()


# --- each service's metric set ----------------------------------------------------------------------------


def test_service_metric_sets_are_isolated_per_instance() -> None:
    from semirl.generator.engine import Generated
    from semirl.generator.metrics import GeneratorMetrics
    from semirl.verifier.engine import Scorer
    from semirl.verifier.loop import outcome
    from semirl.verifier.metrics import VerifierMetrics

    first, second = GeneratorMetrics(), GeneratorMetrics()  # no "Duplicated timeseries": separate registries
    samples = [Generated("a", [5, 6], [-0.1, -0.2], "stop"), Generated("b", [7], [-1.0], "length")]
    first.generated([([1, 2, 3], samples)], 0.25)
    got = collect(first.registry)
    assert got[("semirl_generator_samples_generated_total", ())] == 2.0
    assert got[("semirl_generator_generated_tokens_total", ())] == 3.0
    assert got[("semirl_generator_prompt_tokens_total", ())] == 3.0
    assert got[("semirl_generator_generate_seconds_count", ())] == 1.0
    assert got[("semirl_generator_policy_version", ())] == -1.0
    assert collect(second.registry)[("semirl_generator_samples_generated_total", ())] == 0.0

    scorer = Scorer(1.0)  # never started: the collector only reads its counts
    scorer.timeouts = 2
    verifier = VerifierMetrics(scorer)
    VerifierMetrics(scorer)
    got = collect(verifier.registry)
    assert got[("semirl_verifier_timeouts_total", ())] == 2.0
    assert got[("semirl_verifier_samples_scored_total", (("outcome", "no_answer"),))] == 0.0
    assert got[("semirl_verifier_groups_dropped_total", (("reason", "stale"),))] == 0.0
    assert [outcome("\\boxed{4}", 1.0), outcome("\\boxed{5}", 0.0), outcome("four", 0.0)] == [
        "correct", "incorrect", "no_answer"]


def test_trainer_metrics_and_status() -> None:
    from semirl.trainer.metrics import StatusCollector, TrainerMetrics, TrainerStatus

    status = TrainerStatus(trainer_id="t0", step=3, total_steps=10, policy_version=2, state="training")
    metrics = TrainerMetrics()
    metrics.registry.register(StatusCollector(status))
    TrainerMetrics()
    metrics.trained({"step_seconds": 1.5, "wait_seconds": 0.5, "loss": 0.69, "pref_accuracy": 0.75, "margin": 0.1},
                    pairs=3, groups=4, skipped=["all_correct"])
    got = collect(metrics.registry)
    assert got[("semirl_trainer_steps_total", ())] == 1.0
    assert got[("semirl_trainer_step_seconds_sum", ())] == 1.5
    assert got[("semirl_trainer_loss", ())] == pytest.approx(0.69)
    assert got[("semirl_trainer_reward_accuracy", ())] == 0.75
    assert got[("semirl_trainer_reward_margin", ())] == pytest.approx(0.1)
    assert got[("semirl_trainer_groups_trained_total", ())] == 3.0
    assert got[("semirl_trainer_groups_skipped_total", (("reason", "all_correct"),))] == 1.0
    assert got[("semirl_trainer_pairs_total", ())] == 3.0
    assert got[("semirl_trainer_last_step", ())] == 3.0
    assert got[("semirl_trainer_policy_version", ())] == 2.0
    assert got[("semirl_trainer_state", (("state", "training"),))] == 1.0
    assert got[("semirl_trainer_state", (("state", "idle"),))] == 0.0


# --- the controller's collector ---------------------------------------------------------------------------


def _spec_files(tmp_path: Path) -> dict[str, Path]:
    model = tmp_path / "seed"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"problem": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(8)))
    return {"model": model, "train": train}


def _submit(controller: Controller, tmp_path: Path, name: str) -> str:
    files = _spec_files(tmp_path / name)
    spec = parse_run_spec({
        "name": name, "model": {"path": str(files["model"])}, "data": {"train": {"path": str(files["train"])}},
        "sync": {"interval": 2}, "train": {"steps": 4, "batch_prompts": 2},
    }, check_paths=True)
    run_id = controller.submit(spec).id
    controller.schedule()  # the loop's next round
    return run_id


def test_controller_collector_reads_queues_and_the_active_run(redis_client: redis.Redis, tmp_path: Path) -> None:
    controller = Controller(redis_client, tmp_path / "store", reload_timeout_s=1.0)
    registry = CollectorRegistry()
    server = telemetry.serve_metrics(free_port(), host="127.0.0.1", registry=registry,
                                     extra_collectors=[ControllerCollector(controller)])
    assert server is not None
    try:
        idle = scrape(server.url)
        assert idle[("semirl_redis_up", ())] == 1.0
        assert idle[("semirl_run_active", ())] == 0.0
        assert idle[("semirl_queue_length", (("stream", "prompts"),))] == 0.0
        assert "semirl_run_step" not in names(idle)

        run_id = _submit(controller, tmp_path, "first")  # starts at once: the first window's prompts are released
        _submit(controller, tmp_path, "second")          # queued behind it
        record = load_run(redis_client, run_id)
        assert record is not None and record.state == "running"
        record.step, record.syncs = 2, 1
        save_run(redis_client, record)
        controller.reloads.last_outcomes = [ReloadOutcome("g1", "h:1", True), ReloadOutcome("g2", "h:2", False),
                                  ReloadOutcome("g3", "h:3", True)]

        samples = scrape(server.url)
        run = (("run", run_id),)
        assert samples[("semirl_queue_length", (("stream", "prompts"),))] == 4.0  # 2 steps x 2 prompts
        assert samples[("semirl_queue_lag", (("stream", "prompts"),))] == 4.0
        assert samples[("semirl_queue_pending", (("stream", "prompts"),))] == 0.0
        assert {labels[0][1] for name, labels in samples if name == "semirl_queue_lag"} == {
            s.rsplit(":", 1)[-1] for s in keys.STREAM_GROUPS}
        assert samples[("semirl_run_active", ())] == 1.0
        assert samples[("semirl_run_step", run)] == 2.0
        assert samples[("semirl_run_total_steps", run)] == 4.0
        assert samples[("semirl_run_policy_version", run)] == 0.0
        assert samples[("semirl_run_generation_version", run)] == 0.0
        assert samples[("semirl_run_syncs_total", run)] == 1.0
        assert samples[("semirl_runs", (("state", "running"),))] == 1.0
        assert samples[("semirl_runs", (("state", "queued"),))] == 1.0
        assert samples[("semirl_runs", (("state", "failed"),))] == 0.0
        assert samples[("semirl_reload_last_generators", (("outcome", "ok"),))] == 2.0
        assert samples[("semirl_reload_last_generators", (("outcome", "failed"),))] == 1.0
    finally:
        server.close()


def test_controller_collector_survives_redis_going_away(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis", append_only=False)
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        controller = Controller(client, tmp_path / "store")
        controller.reloads.last_outcomes = [ReloadOutcome("g1", "h:1", True)]
        registry = CollectorRegistry()
        registry.register(ControllerCollector(controller))
        assert collect(registry)[("semirl_redis_up", ())] == 1.0
        server.stop()

        started = time.monotonic()
        samples = collect(registry)  # raises nothing
        assert time.monotonic() - started < 20
        assert samples[("semirl_redis_up", ())] == 0.0
        assert samples[("semirl_reload_last_generators", (("outcome", "ok"),))] == 1.0
        assert not {n for n in names(samples) if n.startswith(("semirl_queue_", "semirl_run"))}
    finally:
        server.stop()
        client.close()
