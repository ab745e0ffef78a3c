"""What the sweep keeps of one finished run: its evaluations, a few per-step curves and its efficiency figures.

Everything comes from the controller's read API (the run record and its per-step metrics) except the generators'
busy time, which comes from their Prometheus endpoints when the sweep knows them (`GeneratorClock`).
"""

from __future__ import annotations

import math
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field

# Per-step metrics kept per run: the plots draw length and entropy; the rest say why a curve went where it did
# (DPO's likelihoods and margin, GRPO's KL); a metric a run does not report is simply absent.
CURVE_METRICS = ("reward_mean", "response_tokens", "entropy", "loss", "chosen_logp", "rejected_logp", "margin", "kl")
# A generator is busy while its engine generates or loads weights; everything else is waiting for work.
BUSY_SECONDS = ("semirl_generator_generate_seconds", "semirl_generator_reload_seconds")


class EvalPoint(BaseModel):
    eval_set: str
    step: int
    elapsed_s: float | None = Field(description="Seconds from the run's start to the report of the evaluated step "
                                    "(null when that report is missing).")
    accuracy: float
    mean_score: float | None = None
    mean_score_per_token: float | None = None
    mean_response_tokens: float


class CurvePoint(BaseModel):
    step: int
    elapsed_s: float
    values: dict[str, float]


class CellResult(BaseModel):
    key: str
    setting: str
    seed: int
    run_id: str
    state: str
    error: str | None = None
    wall_s: float = Field(description="The run's start to its end (evaluations included).")
    steps: int
    syncs: int
    evals: list[EvalPoint]
    curve: list[CurvePoint]
    train_samples_per_s: float = Field(description="Samples the trainer trained on per second of the training span "
                                       "(the run's start to its last step).")
    trainer_wait_fraction: float = Field(description="Share of the training span the trainer waited for groups.")
    generator_idle_fraction: float | None = Field(
        None, description="Share of the run's observed time × generators in which no generator generated or loaded "
        "weights; null when the sweep could not read the generators' metrics for the whole run.")


class GeneratorClock:
    """Sum of the generators' busy seconds, read from their /metrics endpoints (counters: read before and after a
    run, the difference is that run's)."""

    def __init__(self, metrics_urls: list[str]) -> None:
        self.metrics_urls = metrics_urls

    def busy_seconds(self) -> float | None:
        if not self.metrics_urls:
            return None
        total = 0.0
        for url in self.metrics_urls:
            try:
                text = httpx.get(url, timeout=10.0).text
            except httpx.HTTPError:
                return None
            for family in text_string_to_metric_families(text):
                if family.name in BUSY_SECONDS:
                    total += sum(s.value for s in family.samples if s.name == f"{family.name}_sum")
        return total


def eval_points(record: dict[str, Any], step_times: dict[int, float]) -> list[EvalPoint]:
    return [
        EvalPoint(eval_set=e["eval_set"], step=e["step"], elapsed_s=step_times.get(e["step"]),
                  accuracy=e["accuracy"], mean_score=e.get("mean_score"),
                  mean_score_per_token=e.get("mean_score_per_token"), mean_response_tokens=e["mean_response_tokens"])
        for e in record.get("evals") or []
    ]


def collect(key: str, setting: str, seed: int, record: dict[str, Any], metrics: list[dict[str, Any]],
            busy_seconds: float | None, observed_s: float, generators: int) -> CellResult:
    """A finished run as the sweep keeps it. `busy_seconds`: the generators' busy time in the `observed_s` seconds
    the sweep followed the run."""
    started = record.get("started_at") or record["created_at"]
    finished = record.get("finished_at") or started
    step_times = {0: 0.0} | {int(m["step"]): m["time"] - started for m in metrics if "time" in m}
    training_s = max(step_times.values()) or finished - started
    # The trainer reports each step's samples as a rate over the step's own compute time.
    samples = sum(float(m.get("samples_per_s", 0.0)) * float(m.get("step_seconds", 0.0)) for m in metrics)
    wall_s = finished - started
    idle = None
    if busy_seconds is not None and generators > 0 and observed_s > 0:
        idle = min(1.0, max(0.0, 1.0 - busy_seconds / (observed_s * generators)))
    return CellResult(
        key=key, setting=setting, seed=seed, run_id=record["id"], state=record["state"], error=record.get("error"),
        wall_s=wall_s, steps=record.get("step", 0), syncs=record.get("syncs", 0),
        evals=eval_points(record, step_times),
        curve=[CurvePoint(step=int(m["step"]), elapsed_s=step_times[int(m["step"])],
                          values={k: float(m[k]) for k in CURVE_METRICS if _finite(m.get(k))})
               for m in metrics if "time" in m],
        train_samples_per_s=samples / training_s if training_s > 0 else 0.0,
        trainer_wait_fraction=(sum(float(m.get("wait_seconds", 0.0)) for m in metrics) / training_s
                               if training_s > 0 else 0.0),
        generator_idle_fraction=idle,
    )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
