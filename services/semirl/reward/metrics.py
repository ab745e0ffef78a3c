"""The reward service's Prometheus metrics (its own registry, core/telemetry.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from semirl.core import telemetry
from semirl.core.group_scoring import ScorerMetrics


class RewardMetrics(ScorerMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("reward", registry)
        r = self.registry
        self.samples_scored = Counter("semirl_reward_samples_scored", "Samples scored by the reward model",
                                      registry=r)
        self.truncated = Counter("semirl_reward_truncated", "Samples whose input was cut to the model's max length",
                                 registry=r)
        self.scoring_seconds = Histogram("semirl_reward_scoring_seconds", "Time to score one read's groups",
                                         registry=r, buckets=telemetry.SECONDS_BUCKETS)
        self.rpc_items = Counter("semirl_reward_rpc_items_scored", "Responses scored through the Score RPC",
                                 registry=r)
        self.groups_failed = Counter("semirl_reward_groups_failed", "Groups the model could not score (forwarded "
                                     "without rewards)", registry=r)
