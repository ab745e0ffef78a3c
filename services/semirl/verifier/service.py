"""The verifier worker: sample groups from `to_verify` in, scored groups out (docs/architecture.md, data flow).

Each `SampleGroup` is scored sample by sample against its task's gold answer, reading each response's answer as
the task's `answer_format` says (math-verify in a worker process with a hard per-item timeout), and forwarded as
a `ScoredGroup` (rewards in sample order) to `scored` for training tasks or `eval_scored` for evaluation tasks,
at most once per (run, prompt_id). The direct path is the VerifierService.Verify RPC (its items carry no answer
format: they are read as LATEX). A group with no samples (a task the generator gave up on) is scored to a
`ScoredGroup` with no rewards. Groups of runs that are no longer active are acked and dropped.

Prometheus metrics (`VerifierMetrics`, served by `python -m semirl.verifier --metrics-port`) count groups and
samples scored, scoring time per group, dropped groups and the scoring worker's timeouts and restarts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from semirl.core import telemetry
from semirl.core.group_scoring import GroupScorer
from semirl.core.grpc_server import ServiceServer
from semirl.core.redis_client import connect
from semirl.core.registration import Registration
from semirl.core.streams import Delivery
from semirl.proto import types_pb2, verifier_pb2, verifier_pb2_grpc
from semirl.trainer.pairs import CORRECT_THRESHOLD
from semirl.verifier.scoring import BOXED_MARKERS, DEFAULT_TIMEOUT_S, AnswerFormat, Scorer

log = logging.getLogger(__name__)


def answer_format(task: types_pb2.PromptTask) -> AnswerFormat:
    """The task's answer format; UNSPECIFIED (and any value this build does not know) reads as LATEX."""
    return AnswerFormat.BOXED if task.answer_format == types_pb2.ANSWER_FORMAT_BOXED else AnswerFormat.LATEX


def outcome(response: str, reward: float) -> str:
    """How a sample scored: correct, incorrect (incl. timed out: see semirl_verifier_timeouts_total) or
    no_answer (no boxed answer to check)."""
    if reward > CORRECT_THRESHOLD:
        return "correct"
    return "incorrect" if any(marker in response for marker in BOXED_MARKERS) else "no_answer"


class VerifierMetrics:
    """The verifier's Prometheus metrics, in their own registry (core/telemetry.py)."""

    def __init__(self, scorer: Scorer, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else telemetry.new_registry()
        r = self.registry
        self.groups_scored = Counter("semirl_verifier_groups_scored", "Scored groups forwarded downstream",
                                     ["purpose"], registry=r)
        self.samples_scored = Counter("semirl_verifier_samples_scored",
                                      "Samples of forwarded groups, by outcome (correct, incorrect, no_answer)",
                                      ["outcome"], registry=r)
        self.scoring_seconds = Histogram("semirl_verifier_scoring_seconds", "Time to score one group's samples",
                                         registry=r, buckets=telemetry.SECONDS_BUCKETS)
        self.groups_dropped = Counter("semirl_verifier_groups_dropped",
                                      "Groups acked without scoring (stale: their run has ended; malformed; "
                                      "duplicate: already scored)", ["reason"], registry=r)
        self.rpc_items = Counter("semirl_verifier_rpc_items_scored", "Items scored through the Verify RPC",
                                 registry=r)
        self.redis_errors = Counter("semirl_verifier_redis_errors", "Redis errors in the work loop", registry=r)
        for purpose in ("train", "eval"):
            self.groups_scored.labels(purpose)
        for name in ("correct", "incorrect", "no_answer"):
            self.samples_scored.labels(name)
        for reason in ("stale", "malformed", "duplicate"):
            self.groups_dropped.labels(reason)
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


class VerifierServicer(verifier_pb2_grpc.VerifierServiceServicer):
    def __init__(self, scorer: Scorer, timeout_s: float, metrics: VerifierMetrics | None = None) -> None:
        self.scorer = scorer
        self.timeout_s = timeout_s
        self.metrics = metrics

    def Verify(self, request: verifier_pb2.VerifyRequest, context: grpc.ServicerContext):  # noqa: N802
        rewards = self.scorer.score_batch([(i.response, i.gold_answer) for i in request.items], self.timeout_s)
        if self.metrics is not None:
            self.metrics.rpc_items.inc(len(rewards))
        return verifier_pb2.VerifyResponse(rewards=rewards)


class VerifierService(GroupScorer):
    """math-verify over `to_verify` (the shared loop: core/group_scoring.py), plus the Verify RPC."""

    def __init__(
        self,
        redis_url: str,
        grpc_port: int,
        verifier_id: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        batch_size: int = 16,
        block_ms: int = 1000,
        advertise_host: str = "127.0.0.1",
    ) -> None:
        self.verifier_id = verifier_id
        self.timeout_s = timeout_s
        self.scorer = Scorer(timeout_s)
        client = connect(redis_url)
        super().__init__(client, types_pb2.REWARD_SOURCE_VERIFIER, verifier_id, VerifierMetrics(self.scorer),
                         batch_size=batch_size, block_ms=block_ms)
        self.server = ServiceServer(f"0.0.0.0:{grpc_port}", "semirl.v1.VerifierService")
        self.server.add(verifier_pb2_grpc.add_VerifierServiceServicer_to_server,
                        VerifierServicer(self.scorer, timeout_s, self.metrics))
        self.port = self.server.port
        self.registration = Registration(self.client, "verifier", verifier_id, f"{advertise_host}:{self.port}")

    def start(self) -> None:
        self.scorer.start()
        super().start()

    def score_groups(self, groups: list[Delivery[types_pb2.SampleGroup]]) -> dict[str, list[float]]:
        """Each group's rewards (by entry id), all groups' samples scored in one batch."""
        items = [(sample.text, d.message.task.gold_answer, answer_format(d.message.task))
                 for d in groups for sample in d.message.samples]
        started = time.perf_counter()
        scores = self.scorer.score_items(items, self.timeout_s) if items else []
        per_item = (time.perf_counter() - started) / len(items) if items else 0.0
        rewards: dict[str, list[float]] = {}
        position = 0
        for delivery in groups:
            count = len(delivery.message.samples)
            rewards[delivery.entry_id] = scores[position:position + count]
            position += count
            if count:  # one observation per group, as when groups were scored one by one
                self.metrics.scoring_seconds.observe(per_item * count)
        return rewards

    def observe_forwarded(self, group: types_pb2.SampleGroup, rewards: list[float]) -> None:
        for sample, reward in zip(group.samples, rewards, strict=False):
            self.metrics.samples_scored.labels(outcome(sample.text, reward)).inc()

    def close(self) -> None:
        self.scorer.close()
