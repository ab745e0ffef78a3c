"""A real service process serving /metrics: the verifier (real Redis, gRPC and math-verify) scrapes as its
counters move. The port comes from SEMIRL_METRICS_PORT, as the chart sets it."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
from dashboard_metrics import PROMETHEUS_SERIES, load_dashboard, panel_exprs, selected_components, selectors
from prometheus_client.parser import text_string_to_metric_families
from service_process import ServiceProcess, running_service

from semirl.core import keys
from semirl.core.grpc_server import channel
from semirl.core.redis_server import EmbeddedRedis, free_port
from semirl.core.streams import publish
from semirl.proto import types_pb2, verifier_pb2, verifier_pb2_grpc

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Verifier(ServiceProcess):
    metrics_url: str
    client: redis.Redis

    def scrape(self) -> Samples:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def wait_for(self, check: Callable[[Samples], bool], timeout: float = 30.0) -> Samples:
        deadline = time.monotonic() + timeout
        while True:
            samples = self.scrape()
            if check(samples):
                return samples
            assert time.monotonic() < deadline, f"metrics never matched; last scrape {samples}\n{self.tail()}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def verifier(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Verifier]:
    client = redis_server.client()
    client.flushall()
    metrics_port = free_port()
    log_dir = tmp_path_factory.mktemp("verifier-metrics")
    env = {"SEMIRL_METRICS_PORT": str(metrics_port)}
    args = ["--verifier-id", "ver-metrics", "--timeout-s", "2"]
    with running_service("verifier", redis_server.url, log_dir, args, env=env) as process:
        service = Verifier(**vars(process), metrics_url=f"http://127.0.0.1:{metrics_port}/metrics", client=client)
        yield service
    with pytest.raises(urllib.error.URLError):  # the exporter went away with the process
        service.scrape()
    client.close()


def _group(prompt_id: str, gold: str, texts: list[str], run_id: str = "r-metrics") -> types_pb2.SampleGroup:
    task = types_pb2.PromptTask(run_id=run_id, prompt_id=prompt_id, purpose=types_pb2.TASK_PURPOSE_TRAIN,
                                prompt="Q?", gold_answer=gold, reward_source=types_pb2.REWARD_SOURCE_VERIFIER)
    return types_pb2.SampleGroup(
        task=task, samples=[types_pb2.Sample(text=t, token_ids=[1], logprobs=[-0.1]) for t in texts],
        policy_version=0, generator_id="g0",
    )


def test_verifier_metrics_move_with_the_work(verifier: Verifier, save_ended_run) -> None:  # noqa: ANN001
    before = verifier.scrape()
    assert before[("semirl_verifier_groups_scored_total", (("purpose", "train"),))] == 0.0
    assert before[("semirl_verifier_scoring_seconds_count", ())] == 0.0
    assert ("process_resident_memory_bytes", ()) in before

    publish(verifier.client, keys.TO_VERIFY, _group("p-1", "42", ["so \\boxed{42}", "\\boxed{41}", "forty-two"]))
    after = verifier.wait_for(lambda s: s[("semirl_verifier_groups_scored_total", (("purpose", "train"),))] == 1.0)
    assert verifier.client.xlen(keys.SCORED) == 1
    assert after[("semirl_verifier_samples_scored_total", (("outcome", "correct"),))] == 1.0
    assert after[("semirl_verifier_samples_scored_total", (("outcome", "incorrect"),))] == 1.0
    assert after[("semirl_verifier_samples_scored_total", (("outcome", "no_answer"),))] == 1.0
    assert after[("semirl_verifier_scoring_seconds_count", ())] == 1.0
    assert after[("semirl_verifier_scoring_seconds_sum", ())] > 0.0

    publish(verifier.client, keys.TO_VERIFY, _group("p-1", "42", ["\\boxed{42}"]))  # a redelivery of p-1
    save_ended_run(verifier.client, "r-ended")
    publish(verifier.client, keys.TO_VERIFY, _group("p-2", "5", ["\\boxed{5}"], run_id="r-ended"))
    dropped = verifier.wait_for(
        lambda s: s[("semirl_verifier_groups_dropped_total", (("reason", "stale"),))] == 1.0
        and s[("semirl_verifier_groups_dropped_total", (("reason", "duplicate"),))] == 1.0)
    assert dropped[("semirl_verifier_groups_scored_total", (("purpose", "train"),))] == 1.0
    assert verifier.client.xlen(keys.SCORED) == 1

    stub = verifier_pb2_grpc.VerifierServiceStub(channel(verifier.target))
    stub.Verify(verifier_pb2.VerifyRequest(items=[verifier_pb2.VerifyItem(response="\\boxed{7}", gold_answer="7")]),
                timeout=60)
    assert verifier.scrape()[("semirl_verifier_rpc_items_scored_total", ())] == 1.0


def test_the_dashboard_asks_the_verifier_for_what_it_serves(verifier: Verifier) -> None:
    """The chart's Grafana dashboard against a real verifier's /metrics page: every metric a panel selects from the
    verifier is on it (tests/chart/test_grafana_dashboard.py checks all services against their registries)."""
    served = {name for name, _ in verifier.scrape()}
    asked = {selector.name for expr in panel_exprs(load_dashboard()) for selector in selectors(expr)
             if "verifier" in selected_components(selector)} - PROMETHEUS_SERIES
    assert "semirl_verifier_samples_scored_total" in asked and "process_resident_memory_bytes" in asked
    assert asked <= served, sorted(asked - served)
