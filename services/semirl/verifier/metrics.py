"""The verifier's Prometheus metrics (its own registry, core/telemetry.py): groups and samples scored, scoring time,
dropped groups and Redis errors (core/group_scoring.py), Verify RPC items, and the scoring worker's timeouts and
restarts, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from semirl.core import telemetry
from semirl.core.group_scoring import ScorerMetrics
from semirl.verifier.engine import Scorer

OUTCOMES = ("correct", "incorrect", "no_answer")


class VerifierMetrics(ScorerMetrics):
    def __init__(self, scorer: Scorer, registry: CollectorRegistry | None = None) -> None:
        super().__init__("verifier", registry)
        r = self.registry
        self.samples_scored = Counter("semirl_verifier_samples_scored",
                                      "Samples of forwarded groups, by outcome (correct, incorrect, no_answer)",
                                      ["outcome"], registry=r)
        self.scoring_seconds = Histogram("semirl_verifier_scoring_seconds", "Time to score one group's samples",
                                         registry=r, buckets=telemetry.SECONDS_BUCKETS)
        self.rpc_items = Counter("semirl_verifier_rpc_items_scored", "Items scored through the Verify RPC",
                                 registry=r)
        for name in OUTCOMES:
            self.samples_scored.labels(name)
        r.register(ScorerCollector(scorer))


class ScorerCollector(Collector):
    """The scoring worker's own counts (timeouts, restarts), read at scrape time."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def collect(self) -> Iterator[Metric]:
        timeouts = CounterMetricFamily("semirl_verifier_timeouts", "Items that overran the hard scoring timeout "
                                       "(scored 0, counted as incorrect)")
        timeouts.add_metric([], float(self.scorer.timeouts))
        restarts = CounterMetricFamily("semirl_verifier_worker_restarts", "Scoring worker processes replaced")
        restarts.add_metric([], float(self.scorer.restarts))
        return iter([timeouts, restarts])
