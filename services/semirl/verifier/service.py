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
import threading
import time
from collections.abc import Iterator

import grpc
import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from semirl.core import keys, telemetry
from semirl.core.grpc_server import ServiceServer
from semirl.core.redis_client import connect
from semirl.core.registration import Registration
from semirl.core.runstate import StaleRunFilter
from semirl.core.streams import Delivery, StreamQueue
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


def output_stream(task: types_pb2.PromptTask) -> str:
    return keys.EVAL_SCORED if task.purpose == types_pb2.TASK_PURPOSE_EVAL else keys.SCORED


class VerifierService:
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
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.stop = threading.Event()
        self.client = connect(redis_url)
        self.scorer = Scorer(timeout_s)
        self.metrics = VerifierMetrics(self.scorer)
        self.queue: StreamQueue[types_pb2.SampleGroup] = StreamQueue(
            self.client, keys.TO_VERIFY, keys.VERIFIERS_GROUP, verifier_id, types_pb2.SampleGroup,
            owner_service="verifier",
        )
        self.server = ServiceServer(f"0.0.0.0:{grpc_port}", "semirl.v1.VerifierService")
        self.server.add(verifier_pb2_grpc.add_VerifierServiceServicer_to_server,
                        VerifierServicer(self.scorer, timeout_s, self.metrics))
        self.port = self.server.port
        self.registration = Registration(self.client, "verifier", verifier_id, f"{advertise_host}:{self.port}")
        self.groups_scored = 0
        self.stale_runs = StaleRunFilter(self.client)
        self.groups_dropped_stale = 0

    def start(self) -> None:
        self.scorer.start()
        self.server.start()
        self.registration.start()
        self.server.set_serving(True)

    def serve_forever(self) -> None:
        self.start()
        log.info("verifier %s serving gRPC on :%d", self.verifier_id, self.port)
        try:
            while not self.stop.is_set():
                self.step()
        finally:
            self.shutdown()

    def step(self) -> int:
        try:
            deliveries = self.queue.read(count=self.batch_size, block_ms=self.block_ms)
            self.handle_batch(deliveries)
            return len(deliveries)
        except redis.RedisError:
            self.metrics.redis_errors.inc()
            log.exception("Redis error; retrying")
            self.stop.wait(1.0)
            return 0

    def handle_batch(self, deliveries: list[Delivery[types_pb2.SampleGroup]]) -> list[bool]:
        """Score every new group of one read in a single batch to the scoring worker, then forward each (at most
        once per prompt); returns, per delivery, whether its ScoredGroup was written."""
        accepted = [delivery for delivery in deliveries if self._accept(delivery)]
        pipe = self.client.pipeline(transaction=False)
        for delivery in accepted:
            task = delivery.message.task
            pipe.sismember(keys.done_key(task.run_id, "verify"), task.prompt_id)
        already_done = pipe.execute() if accepted else []
        fresh: dict[tuple[str, str], Delivery[types_pb2.SampleGroup]] = {}  # the first of a prompt's copies
        for delivery, done in zip(accepted, already_done, strict=True):
            task = delivery.message.task
            if not done:
                fresh.setdefault((task.run_id, task.prompt_id), delivery)
        rewards = self._score(list(fresh.values()))
        # A copy of a group already scored gets no rewards: forward acks it and writes nothing.
        accepted_ids = {delivery.entry_id for delivery in accepted}
        return [self._forward(delivery, rewards.get(delivery.entry_id, []))
                if delivery.entry_id in accepted_ids else False for delivery in deliveries]

    def _score(self, groups: list[Delivery[types_pb2.SampleGroup]]) -> dict[str, list[float]]:
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

    def _accept(self, delivery: Delivery[types_pb2.SampleGroup]) -> bool:
        """False (and the entry acked) for a malformed group or one of a run that is no longer active."""
        task = delivery.message.task
        if not task.run_id or not task.prompt_id:
            log.error("dropping malformed group %s", delivery.entry_id)
            self.metrics.groups_dropped.labels("malformed").inc()
            self.queue.ack([delivery.entry_id])
            return False
        if self.stale_runs.stale(task.run_id):
            self.groups_dropped_stale += 1
            self.metrics.groups_dropped.labels("stale").inc()
            log.info("dropping group %s/%s of a run that is no longer active (%d dropped so far)",
                     task.run_id, task.prompt_id, self.groups_dropped_stale)
            self.queue.ack([delivery.entry_id])
            return False
        return True

    def _forward(self, delivery: Delivery[types_pb2.SampleGroup], rewards: list[float]) -> bool:
        group = delivery.message
        task = group.task
        scored = types_pb2.ScoredGroup(group=group, rewards=rewards, scorer_id=self.verifier_id)
        written = self.queue.forward(delivery, output_stream(task), scored,
                                     done_set=keys.done_key(task.run_id, "verify"), member=task.prompt_id)
        if written:
            self.groups_scored += 1
            purpose = "eval" if task.purpose == types_pb2.TASK_PURPOSE_EVAL else "train"
            self.metrics.groups_scored.labels(purpose).inc()
            for sample, reward in zip(group.samples, rewards, strict=False):
                self.metrics.samples_scored.labels(outcome(sample.text, reward)).inc()
        else:
            self.metrics.groups_dropped.labels("duplicate").inc()
        return written

    def shutdown(self) -> None:
        self.stop.set()
        self.server.set_serving(False)
        self.registration.stop()
        self.server.stop()
        self.scorer.close()
        self.client.close()
