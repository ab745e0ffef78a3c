"""The work loop both scorers share (verifier, reward model): sample groups in, scored groups out, exactly once.

A scorer is a `Worker` (core/worker.py). It reads `SampleGroup`s from its stream (`to_verify`, `to_reward`); the
kit's `accept()` drops malformed groups, groups of runs that are no longer active and groups whose prompt the stage
has already scored (acked, counted in `dropped{reason}`). It scores every new group of the read in one batch
(`score_groups`, the only thing a scorer defines) and forwards each as a `ScoredGroup` — rewards in sample
order, `scorer_id` naming who scored it — to `scored` (training) or `eval_scored` (evaluation), at most once per
(run, stage, prompt id) through `StreamQueue.forward` (docs/architecture.md, decision 3). Which stream feeds
which scorer is the task's reward source (core/rewards.py, the one place that says so).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import ClassVar

import redis
from prometheus_client import CollectorRegistry, Counter

from semirl.core import keys
from semirl.core.rewards import SCORERS, output_stream
from semirl.core.streams import Delivery, StreamQueue
from semirl.core.worker import Worker, WorkerMetrics
from semirl.proto import types_pb2

log = logging.getLogger(__name__)


class ScorerMetrics(WorkerMetrics):
    """What both scorers count: groups forwarded by purpose, and the kit's dropped groups and Redis errors."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        super().__init__(service, "groups", "Groups acked without scoring (stale: their run has ended; malformed; "
                         "duplicate: already scored)", registry)
        self.groups_scored = Counter(f"semirl_{service}_groups_scored", "Scored groups forwarded downstream",
                                     ["purpose"], registry=self.registry)
        for purpose in ("train", "eval"):
            self.groups_scored.labels(purpose)


class GroupScorer(Worker[types_pb2.SampleGroup]):
    """One scorer's stream consumer; subclasses say how a read's groups are scored (`score_groups`)."""

    source: ClassVar[int]  # the reward source it scores (types_pb2.REWARD_SOURCE_*)

    metrics: ScorerMetrics

    def __init__(self, client: redis.Redis, scorer_id: str, metrics: ScorerMetrics, *, grpc_port: int,
                 advertise_host: str = "127.0.0.1", batch_size: int, block_ms: int) -> None:
        super().__init__(client, scorer_id, metrics, grpc_port=grpc_port, advertise_host=advertise_host)
        scorer = SCORERS[self.source]
        self.scorer_id = scorer_id
        self.done_stage = scorer.stage
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.queue: StreamQueue[types_pb2.SampleGroup] = StreamQueue(
            client, scorer.stream, scorer.group, scorer_id, types_pb2.SampleGroup, owner_service=scorer.service)
        self.groups_scored = 0

    @abstractmethod
    def score_groups(self, groups: list[Delivery[types_pb2.SampleGroup]]) -> dict[str, list[float]]:
        """Each group's rewards by entry id, in sample order (all groups of one read in one batch)."""

    def observe_forwarded(self, group: types_pb2.SampleGroup, rewards: list[float]) -> None:  # noqa: B027
        """Per-sample metrics of a forwarded group (optional)."""

    def step(self) -> int:
        deliveries = self.queue.read(count=self.batch_size, block_ms=self.block_ms)
        self.handle_batch(deliveries)
        return len(deliveries)

    def handle_batch(self, deliveries: list[Delivery[types_pb2.SampleGroup]]) -> list[bool]:
        """Score every new group of one read in a single batch, then forward each (at most once per prompt);
        returns, per delivery, whether its ScoredGroup was written."""
        accepted = self.accept(deliveries, self.queue.ack)
        fresh: dict[tuple[str, str], Delivery[types_pb2.SampleGroup]] = {}  # the first of a prompt's copies
        for delivery in accepted:
            task = delivery.message.task
            fresh.setdefault((task.run_id, task.prompt_id), delivery)
        rewards = self.score_groups(list(fresh.values())) if fresh else {}
        # A second copy of a group in the same read gets no rewards: forward acks it and writes nothing.
        accepted_ids = {delivery.entry_id for delivery in accepted}
        return [self._forward(delivery, rewards.get(delivery.entry_id, []))
                if delivery.entry_id in accepted_ids else False for delivery in deliveries]

    def _forward(self, delivery: Delivery[types_pb2.SampleGroup], rewards: list[float]) -> bool:
        group = delivery.message
        task = group.task
        scorer_stage = SCORERS[self.source].stage
        scored = types_pb2.ScoredGroup(group=group, rewards=rewards, scorer_id=self.scorer_id)
        written = self.queue.forward(delivery, output_stream(task), scored,
                                     done_set=keys.done_key(task.run_id, scorer_stage), member=task.prompt_id)
        if written:
            self.groups_scored += 1
            purpose = "eval" if task.purpose == types_pb2.TASK_PURPOSE_EVAL else "train"
            self.metrics.groups_scored.labels(purpose).inc()
            self.observe_forwarded(group, rewards)
        else:
            self.metrics.dropped.labels("duplicate").inc()
        return written
