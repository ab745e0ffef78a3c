"""The reward-model worker: sample groups from `to_reward` in, scored groups out (docs/architecture.md, rewards).

Each `SampleGroup` of a REWARD_MODEL task is scored sample by sample by the reward model (reward/engine.py: a
sequence classifier read at the last position, or at an appended score token) on (the task's prompt, the
response), and forwarded as a `ScoredGroup` exactly once, like the verifier's (core/group_scoring.py). Inputs
longer than the model reads are cut from the prompt's left and counted (`semirl_reward_truncated`).
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from semirl.core.group_scoring import GroupScorer
from semirl.core.rewards import split_per_group
from semirl.core.streams import Delivery
from semirl.proto import types_pb2
from semirl.reward.engine import RewardEngine, RewardScore
from semirl.reward.metrics import RewardMetrics

log = logging.getLogger(__name__)


class RewardWorker(GroupScorer):
    service = "reward"
    grpc_service = "semirl.v1.RewardService"
    source = types_pb2.REWARD_SOURCE_REWARD_MODEL
    metrics: RewardMetrics

    def __init__(self, client: redis.Redis, reward_id: str, engine: RewardEngine, metrics: RewardMetrics, *,
                 grpc_port: int, batch_size: int = 16, block_ms: int = 1000,
                 advertise_host: str = "127.0.0.1") -> None:
        super().__init__(client, reward_id, metrics, grpc_port=grpc_port, advertise_host=advertise_host,
                         batch_size=batch_size, block_ms=block_ms)
        self.engine = engine
        self.lock = threading.Lock()  # the stream loop and the Score RPC share one model

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
        scores = [r.score for r in self.score_pairs(pairs)] if pairs else []
        per_group = split_per_group(scores, [len(d.message.samples) for d in groups])
        return {d.entry_id: rewards for d, rewards in zip(groups, per_group, strict=True)}
