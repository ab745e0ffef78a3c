"""The reward-model worker: sample groups from `to_reward` in, scored groups out (docs/architecture.md, decision 42).

Each `SampleGroup` of a REWARD_MODEL task is scored sample by sample by the reward model (reward/engine.py: a
sequence classifier read at the last position, or at an appended score token) on (the task's prompt, the
response), and forwarded as a `ScoredGroup` exactly once, like the verifier's (core/group_scoring.py). The
direct path is the RewardService.Score RPC. Inputs longer than the model reads are cut from the prompt's left and
counted (`semirl_reward_truncated`).
"""

from __future__ import annotations

import logging
import threading
import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from semirl.core import telemetry
from semirl.core.group_scoring import GroupScorer
from semirl.core.grpc_server import ServiceServer
from semirl.core.redis_client import connect
from semirl.core.registration import Registration
from semirl.core.streams import Delivery
from semirl.proto import reward_pb2, reward_pb2_grpc, types_pb2
from semirl.reward.engine import RewardEngine, RewardEngineConfig, RewardScore

log = logging.getLogger(__name__)


class RewardMetrics:
    """The reward service's Prometheus metrics, in their own registry (core/telemetry.py)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else telemetry.new_registry()
        r = self.registry
        self.groups_scored = Counter("semirl_reward_groups_scored", "Scored groups forwarded downstream",
                                     ["purpose"], registry=r)
        self.samples_scored = Counter("semirl_reward_samples_scored", "Samples scored by the reward model",
                                      registry=r)
        self.truncated = Counter("semirl_reward_truncated", "Samples whose input was cut to the model's max length",
                                 registry=r)
        self.scoring_seconds = Histogram("semirl_reward_scoring_seconds", "Time to score one read's groups",
                                         registry=r, buckets=telemetry.SECONDS_BUCKETS)
        self.groups_dropped = Counter("semirl_reward_groups_dropped", "Groups acked without scoring (stale, "
                                      "malformed, duplicate)", ["reason"], registry=r)
        self.rpc_items = Counter("semirl_reward_rpc_items_scored", "Responses scored through the Score RPC",
                                 registry=r)
        self.redis_errors = Counter("semirl_reward_redis_errors", "Redis errors in the work loop", registry=r)
        self.groups_failed = Counter("semirl_reward_groups_failed", "Groups the model could not score (forwarded "
                                     "without rewards)", registry=r)
        for purpose in ("train", "eval"):
            self.groups_scored.labels(purpose)
        for reason in ("stale", "malformed", "duplicate"):
            self.groups_dropped.labels(reason)


class RewardServicer(reward_pb2_grpc.RewardServiceServicer):
    def __init__(self, service: RewardService) -> None:
        self.service = service

    def Score(self, request: reward_pb2.ScoreRequest, context: grpc.ServicerContext):  # noqa: N802
        results = self.service.score_pairs([(request.prompt, response) for response in request.responses])
        self.service.metrics.rpc_items.inc(len(results))
        return reward_pb2.ScoreResponse(scores=[r.score for r in results], truncated=[r.truncated for r in results],
                                        model=self.service.engine.config.model_path)


class RewardService(GroupScorer):
    def __init__(
        self,
        redis_url: str,
        grpc_port: int,
        reward_id: str,
        engine_config: RewardEngineConfig,
        *,
        batch_size: int = 16,
        block_ms: int = 1000,
        advertise_host: str = "127.0.0.1",
    ) -> None:
        super().__init__(connect(redis_url), types_pb2.REWARD_SOURCE_REWARD_MODEL, reward_id, RewardMetrics(),
                         batch_size=batch_size, block_ms=block_ms)
        self.reward_id = reward_id
        self.engine = RewardEngine(engine_config)
        self.lock = threading.Lock()  # the stream loop and the Score RPC share one model
        self.server = ServiceServer(f"0.0.0.0:{grpc_port}", "semirl.v1.RewardService")
        self.server.add(reward_pb2_grpc.add_RewardServiceServicer_to_server, RewardServicer(self))
        self.port = self.server.port
        self.registration = Registration(self.client, "reward", reward_id, f"{advertise_host}:{self.port}")

    def score_pairs(self, pairs: list[tuple[str, str]]) -> list[RewardScore]:
        with self.lock:
            results = self.engine.score(pairs)
        self.metrics.samples_scored.inc(len(results))
        self.metrics.truncated.inc(sum(1 for r in results if r.truncated))
        return results

    def score_groups(self, groups: list[Delivery[types_pb2.SampleGroup]]) -> dict[str, list[float]]:
        """All groups' samples in one batch; when the batch fails (e.g. a score that is not finite), group by group,
        and a group that still fails is forwarded with no rewards (the trainer skips it as malformed, an evaluation
        counts it failed): a poison group never stops the worker or the others."""
        started = time.perf_counter()
        try:
            rewards = self._score_together(groups)
        except Exception:  # noqa: BLE001
            log.exception("scoring %d groups together failed; scoring them one by one", len(groups))
            rewards = {}
            for delivery in groups:
                try:
                    rewards.update(self._score_together([delivery]))
                except Exception:  # noqa: BLE001
                    log.exception("group %s/%s cannot be scored; forwarded without rewards",
                                  delivery.message.task.run_id, delivery.message.task.prompt_id)
                    self.metrics.groups_failed.inc()
                    rewards[delivery.entry_id] = []
        self.metrics.scoring_seconds.observe(time.perf_counter() - started)
        return rewards

    def _score_together(self, groups: list[Delivery[types_pb2.SampleGroup]]) -> dict[str, list[float]]:
        pairs = [(d.message.task.prompt, sample.text) for d in groups for sample in d.message.samples]
        results = self.score_pairs(pairs) if pairs else []
        rewards: dict[str, list[float]] = {}
        position = 0
        for delivery in groups:
            count = len(delivery.message.samples)
            rewards[delivery.entry_id] = [r.score for r in results[position:position + count]]
            position += count
        return rewards
