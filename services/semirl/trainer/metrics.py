"""The trainer's status and Prometheus metrics (its own registry, core/telemetry.py).

`TrainerStatus` is what TrainerService.Status answers and the scrape reads; the training loop writes it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from semirl.core import telemetry
from semirl.core.worker import WorkerMetrics
from semirl.proto import trainer_pb2


@dataclass
class TrainerStatus:
    """What TrainerService.Status reports; written by the training loop, read by gRPC threads."""

    trainer_id: str
    run_id: str = ""
    step: int = 0
    total_steps: int = 0
    policy_version: int = 0
    resumed_from_step: int = 0
    state: str = "idle"
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, **values: Any) -> None:
        with self.lock:
            for name, value in values.items():
                setattr(self, name, value)

    def to_proto(self) -> trainer_pb2.TrainerStatus:
        with self.lock:
            return trainer_pb2.TrainerStatus(
                trainer_id=self.trainer_id, run_id=self.run_id, step=self.step, total_steps=self.total_steps,
                policy_version=self.policy_version, resumed_from_step=self.resumed_from_step, state=self.state,
            )


TRAINER_STATES = ("idle", "loading", "waiting", "training", "checkpointing", "done", "error")

# Gauges of the last trained step: metric name -> (key in the step report's metrics, help).
STEP_GAUGES = {
    "semirl_trainer_loss": ("loss", "Loss of the last step (DPO: per pair; GRPO: per sample)"),
    "semirl_trainer_reward_accuracy": ("pref_accuracy", "Pairs whose chosen implicit reward beats the rejected one"),
    "semirl_trainer_reward_margin": ("margin", "Mean implicit reward margin (chosen - rejected) of the last step"),
    "semirl_trainer_grad_norm": ("grad_norm", "Global gradient norm of the last step"),
    "semirl_trainer_learning_rate": ("lr", "Learning rate of the last step"),
    "semirl_trainer_entropy": ("entropy", "Mean per-token entropy of the last step's responses"),
    "semirl_trainer_sample_accuracy": ("accuracy", "Share of the last step's samples scored correct"),
    "semirl_trainer_sample_reward_mean": ("reward_mean", "Mean reward of the last step's samples"),
    "semirl_trainer_staleness_steps": ("staleness", "Step minus the oldest policy version in the last step"),
    "semirl_trainer_staleness_mean": ("staleness_mean", "Mean optimizer updates between the policy that sampled a "
                                      "group and the one trained on it, last step"),
    "semirl_trainer_staleness_max": ("staleness_max", "Largest such gap in the last step"),
    "semirl_trainer_grpo_kl": ("kl", "GRPO: mean per-token k3 KL to the reference, last step"),
    "semirl_trainer_grpo_advantage_abs": ("advantage_abs", "GRPO: mean |advantage| of the last step's samples"),
    "semirl_trainer_grpo_clip_fraction": ("clip_fraction", "GRPO: share of tokens whose ratio was clipped"),
    "semirl_trainer_grpo_ratio_mean": ("ratio_mean", "GRPO: mean token importance ratio (1 on-policy)"),
    "semirl_trainer_grpo_ratio_max": ("ratio_max", "GRPO: largest token importance ratio of the last step"),
    "semirl_trainer_response_tokens": ("response_tokens", "Mean response length (tokens) of the last step"),
}


class TrainerMetrics(WorkerMetrics):
    """The trainer's Prometheus metrics, in their own registry (core/telemetry.py); `dropped{reason}` counts groups
    acked without training (trainer/intake.py: stale, wrong_version, duplicate, other_run, eval, ...)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("trainer", "groups", "Groups acked without training (stale, wrong_version, duplicate, "
                         "other_run, eval, ...)", registry, reasons=())
        r = self.registry
        buckets = telemetry.SECONDS_BUCKETS
        self.steps = PromCounter("semirl_trainer_steps", "Trainer steps trained", registry=r)
        self.step_seconds = Histogram("semirl_trainer_step_seconds", "Time of one optimizer step (forward, backward, "
                                      "update)", registry=r, buckets=buckets)
        self.wait_seconds = Histogram("semirl_trainer_wait_seconds", "Time a step waited for its scored groups",
                                      registry=r, buckets=buckets)
        self.checkpoint_seconds = Histogram("semirl_trainer_checkpoint_write_seconds", "Time of a whole checkpoint "
                                            "(policy, final/, commit, trainer state)", registry=r, buckets=buckets)
        self.commit_seconds = Histogram("semirl_trainer_commit_seconds", "Time from a checkpoint's start to its "
                                        "policy's commit (what generators wait for)", registry=r, buckets=buckets)
        self.sync_pause_seconds = Histogram("semirl_trainer_sync_pause_seconds", "Time from a sync step's end to its "
                                            "version's release to the generators (in memory or from storage)",
                                            registry=r, buckets=buckets)
        self.checkpoints = PromCounter("semirl_trainer_checkpoints", "Checkpoints written and committed", registry=r)
        self.pairs = PromCounter("semirl_trainer_pairs", "Training examples: DPO pairs, GRPO samples", registry=r)
        self.groups_trained = PromCounter("semirl_trainer_groups_trained", "Groups that gave pairs to a step",
                                          registry=r)
        self.groups_skipped = PromCounter("semirl_trainer_groups_skipped", "Groups of a step that gave no pair "
                                          "(e.g. all correct, all wrong)", ["reason"], registry=r)
        self.run_errors = PromCounter("semirl_trainer_run_errors", "Failed attempts at training a run", registry=r)
        self.step_gauges = {name: PromGauge(name, help_text, registry=r)
                            for name, (_key, help_text) in STEP_GAUGES.items()}

    def trained(self, metrics: dict[str, float], pairs: int, groups: int, skipped: list[str]) -> None:
        self.steps.inc()
        self.step_seconds.observe(metrics["step_seconds"])
        self.wait_seconds.observe(metrics["wait_seconds"])
        self.pairs.inc(pairs)
        self.groups_trained.inc(groups - len(skipped))
        for reason in skipped:
            self.groups_skipped.labels(reason).inc()
        for name, (key, _help) in STEP_GAUGES.items():
            if key in metrics:
                self.step_gauges[name].set(metrics[key])


class StatusCollector(Collector):
    """The trainer's status (what TrainerService.Status answers), read at scrape time."""

    def __init__(self, status: TrainerStatus) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        with self.status.lock:
            values = (self.status.step, self.status.total_steps, self.status.policy_version, self.status.state)
        step, total, version, state = values
        for name, help_text, value in (
            ("semirl_trainer_last_step", "Last step trained of the current run", step),
            ("semirl_trainer_total_steps", "Steps of the current run", total),
            ("semirl_trainer_policy_version", "Last policy version this trainer committed", version),
        ):
            family = GaugeMetricFamily(name, help_text)
            family.add_metric([], float(value))
            yield family
        states = GaugeMetricFamily("semirl_trainer_state", "1 for the trainer's current state", labels=["state"])
        for known in TRAINER_STATES if state in TRAINER_STATES else (*TRAINER_STATES, state):
            states.add_metric([known], 1.0 if known == state else 0.0)
        yield states


