"""The work loop both scorers share (verifier, reward model): sample groups in, scored groups out, exactly once.

A scorer reads `SampleGroup`s from its stream (`to_verify`, `to_reward`), drops malformed groups and groups of runs
that are no longer active (acked, counted), skips a group whose prompt it has already scored (the stage's done
set, checked for a whole read in one pipeline), scores every new group of the read in one batch
(`score_groups`, the only thing a scorer defines) and forwards each as a `ScoredGroup` — rewards in sample
order, `scorer_id` naming who scored it — to `scored` (training) or `eval_scored` (evaluation), at most once per
(run, stage, prompt id) through `StreamQueue.forward` (docs/architecture.md, decision 3). Which stream feeds
which scorer is the task's reward source (`scorer_for` below, the one place that says so).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import Any, Protocol

import redis

from semirl.core import keys
from semirl.core.runstate import StaleRunFilter
from semirl.core.streams import Delivery, StreamQueue
from semirl.proto import types_pb2

log = logging.getLogger(__name__)

SCORER_STREAMS = {  # reward source -> (stream, consumer group, done-set stage, service)
    types_pb2.REWARD_SOURCE_VERIFIER: (keys.TO_VERIFY, keys.VERIFIERS_GROUP, "verify", "verifier"),
    types_pb2.REWARD_SOURCE_REWARD_MODEL: (keys.TO_REWARD, keys.REWARDS_GROUP, "reward", "reward"),
}


def scorer_stream(task: types_pb2.PromptTask) -> str:
    """The stream a generated group goes to: the reward model's for REWARD_MODEL tasks, else the verifier's."""
    source = task.reward_source if task.reward_source in SCORER_STREAMS else types_pb2.REWARD_SOURCE_VERIFIER
    return SCORER_STREAMS[source][0]


def output_stream(task: types_pb2.PromptTask) -> str:
    return keys.EVAL_SCORED if task.purpose == types_pb2.TASK_PURPOSE_EVAL else keys.SCORED


class ScoringMetrics(Protocol):
    groups_scored: Any      # Counter with label purpose
    groups_dropped: Any     # Counter with label reason
    redis_errors: Any       # Counter


class GroupScorer(ABC):
    """One scorer's stream consumer and process lifecycle; subclasses say how a read's groups are scored and set
    `server` (its gRPC ServiceServer) and `registration` in their constructor."""

    server: Any
    registration: Any

    def __init__(self, client: redis.Redis, source: int, scorer_id: str, metrics: ScoringMetrics, *,
                 batch_size: int, block_ms: int) -> None:
        stream, group, self.stage, service = SCORER_STREAMS[source]
        self.client = client
        self.scorer_id = scorer_id
        self.metrics = metrics
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.stop = threading.Event()
        self.queue: StreamQueue[types_pb2.SampleGroup] = StreamQueue(
            client, stream, group, scorer_id, types_pb2.SampleGroup, owner_service=service)
        self.stale_runs = StaleRunFilter(client)
        self.groups_scored = 0
        self.groups_dropped_stale = 0

    def start(self) -> None:
        self.server.start()
        self.registration.start()
        self.server.set_serving(True)

    def serve_forever(self) -> None:
        self.start()
        log.info("%s serving gRPC on :%d", self.scorer_id, self.server.port)
        try:
            while not self.stop.is_set():
                self.step()
        finally:
            self.shutdown()

    def close(self) -> None:  # noqa: B027
        """Release what the scorer holds besides Redis and gRPC (a worker process, a model)."""

    def shutdown(self) -> None:
        self.stop.set()
        self.server.set_serving(False)
        self.registration.stop()
        self.server.stop()
        self.close()
        self.client.close()

    @abstractmethod
    def score_groups(self, groups: list[Delivery[types_pb2.SampleGroup]]) -> dict[str, list[float]]:
        """Each group's rewards by entry id, in sample order (all groups of one read in one batch)."""

    def observe_forwarded(self, group: types_pb2.SampleGroup, rewards: list[float]) -> None:  # noqa: B027
        """Per-sample metrics of a forwarded group (optional)."""

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
        """Score every new group of one read in a single batch, then forward each (at most once per prompt);
        returns, per delivery, whether its ScoredGroup was written."""
        accepted = [delivery for delivery in deliveries if self._accept(delivery)]
        pipe = self.client.pipeline(transaction=False)
        for delivery in accepted:
            task = delivery.message.task
            pipe.sismember(keys.done_key(task.run_id, self.stage), task.prompt_id)
        already_done = pipe.execute() if accepted else []
        fresh: dict[tuple[str, str], Delivery[types_pb2.SampleGroup]] = {}  # the first of a prompt's copies
        for delivery, done in zip(accepted, already_done, strict=True):
            task = delivery.message.task
            if not done:
                fresh.setdefault((task.run_id, task.prompt_id), delivery)
        rewards = self.score_groups(list(fresh.values())) if fresh else {}
        # A copy of a group already scored gets no rewards: forward acks it and writes nothing.
        accepted_ids = {delivery.entry_id for delivery in accepted}
        return [self._forward(delivery, rewards.get(delivery.entry_id, []))
                if delivery.entry_id in accepted_ids else False for delivery in deliveries]

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
        scored = types_pb2.ScoredGroup(group=group, rewards=rewards, scorer_id=self.scorer_id)
        written = self.queue.forward(delivery, output_stream(task), scored,
                                     done_set=keys.done_key(task.run_id, self.stage), member=task.prompt_id)
        if written:
            self.groups_scored += 1
            purpose = "eval" if task.purpose == types_pb2.TASK_PURPOSE_EVAL else "train"
            self.metrics.groups_scored.labels(purpose).inc()
            self.observe_forwarded(group, rewards)
        else:
            self.metrics.groups_dropped.labels("duplicate").inc()
        return written
