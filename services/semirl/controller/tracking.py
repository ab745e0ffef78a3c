"""Run tracking: each run's step metrics, evaluations, spec and outcome exported to MLflow and/or W&B, and its
final/ and best/ policies to an S3-compatible store, all optional settings of the controller (docs/deploy.md,
"tracking").

A thread of its own that reads what the controller already stored (the run index, each run's metric list, its
record) and keeps, per run and exporter, how far it got (`semirl:run:<id>:tracking` in Redis): the controller's lock
and loop never wait on a tracking server, a server that is down delays the export without losing it, and a restarted
controller goes on where the last one stopped. A run's export is done when its terminal state has been exported.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import redis
from pydantic import BaseModel, Field

from semirl.core import keys
from semirl.core.runstate import RunRecord, RunRecordUnreadable

from .run_store import RunStore

log = logging.getLogger(__name__)

DONE_SET = f"{keys.PREFIX}:tracking:done"   # runs whose every exporter has exported their end
MAX_ENTRIES_PER_POLL = 2000                # steps exported per run per poll: a long backlog is caught up in slices


def tracking_key(run_id: str) -> str:
    return f"{keys.PREFIX}:run:{run_id}:tracking"


class TrackingSettings(BaseModel):
    """Where runs are exported; every field off by default (SEMIRL_* environment variables of the controller)."""

    mlflow_tracking_uri: str = Field("", description="SEMIRL_MLFLOW_TRACKING_URI, e.g. http://mlflow:5000")
    mlflow_experiment: str = Field("semirl", min_length=1, description="SEMIRL_MLFLOW_EXPERIMENT")
    wandb_mode: str = Field("", pattern=r"^(|online|offline)$", description="SEMIRL_WANDB_MODE: online (WANDB_API_KEY) "
                            "or offline (files under wandb_dir, for `wandb sync`); empty = off")
    wandb_project: str = Field("semirl", min_length=1, description="SEMIRL_WANDB_PROJECT")
    wandb_dir: str = Field("", description="SEMIRL_WANDB_DIR; empty = <store>/tracking")
    artifact_uri: str = Field("", pattern=r"^(|s3://[^/]+(/.*)?)$",
                              description="SEMIRL_ARTIFACT_URI: s3://bucket/prefix for final/ and best/")
    s3_endpoint_url: str = Field("", description="SEMIRL_S3_ENDPOINT_URL: an S3-compatible store (MinIO, GCS, R2)")
    poll_s: float = Field(10.0, gt=0, description="SEMIRL_TRACKING_POLL_S")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> TrackingSettings:
        env = os.environ if environ is None else environ
        fields = {name: env[f"SEMIRL_{name.upper()}"] for name in cls.model_fields if f"SEMIRL_{name.upper()}" in env}
        if "SEMIRL_TRACKING_POLL_S" in env:
            fields["poll_s"] = env["SEMIRL_TRACKING_POLL_S"]
        return cls.model_validate(fields)

    @property
    def enabled(self) -> bool:
        return bool(self.mlflow_tracking_uri or self.wandb_mode or self.artifact_uri)


class TrackingState:
    """One run's export progress in Redis (a hash of `<exporter>:<what>` fields)."""

    def __init__(self, client: redis.Redis, run_id: str) -> None:
        self.client = client
        self.key = tracking_key(run_id)

    def get(self, field: str) -> str | None:
        raw = self.client.hget(self.key, field)
        return raw.decode() if isinstance(raw, bytes) else raw

    def set(self, field: str, value: str | int) -> None:
        self.client.hset(self.key, field, str(value))


class RunExporter(Protocol):
    name: str

    def steps(self, record: RunRecord, state: TrackingState, entries: Sequence[dict[str, Any]]) -> None: ...

    def evals(self, record: RunRecord, state: TrackingState, results: Sequence[Any]) -> None: ...

    def finish(self, record: RunRecord, state: TrackingState) -> None: ...


def step_metrics(entry: dict[str, Any]) -> dict[str, float]:
    """A stored metric entry's numbers (its `step` and wall `time` are the axes, not metrics)."""
    return {k: float(v) for k, v in entry.items()
            if k not in ("step", "time") and isinstance(v, int | float) and not isinstance(v, bool)}


def eval_metrics(result: Any) -> dict[str, float]:
    prefix = f"eval/{result.eval_set}"
    found = {f"{prefix}/accuracy": float(result.accuracy)}
    for name in ("mean_score", "mean_score_per_token", "stderr"):
        value = getattr(result, name, None)
        if value is not None:
            found[f"{prefix}/{name}"] = float(value)
    return found


def final_metrics(record: RunRecord) -> dict[str, float]:
    found: dict[str, float] = {"run/steps": float(record.step), "run/weight_syncs": float(record.syncs)}
    found.update({f"run/{name}": float(count) for name, count in record.counters.items()})
    if record.best is not None:
        found[f"best/{record.best.metric}"] = float(record.best.value)
        found["best/step"] = float(record.best.step)
    return found


class RunTracking:
    """The export thread: `poll_once` over every run not yet done, every `poll_s`."""

    def __init__(self, client: redis.Redis, run_store: RunStore, exporters: list[RunExporter],
                 poll_s: float = 10.0) -> None:
        self.client = client
        self.run_store = run_store
        self.exporters = exporters
        self.poll_s = poll_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="run-tracking", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.poll_once()
            except (redis.ConnectionError, redis.TimeoutError) as err:
                log.warning("run tracking: redis unavailable: %s", err)
            self.stop.wait(self.poll_s)

    def poll_once(self) -> None:
        done = {d.decode() if isinstance(d, bytes) else d for d in self.client.smembers(DONE_SET)}
        for run_id in self.run_store.run_ids():
            if run_id in done or self.stop.is_set():
                continue
            try:
                record = self.run_store.get(run_id)
            except RunRecordUnreadable:
                continue
            if record is None or record.state == "queued":
                continue
            if all(self._export(exporter, record) for exporter in self.exporters):
                self.client.sadd(DONE_SET, run_id)

    def _export(self, exporter: RunExporter, record: RunRecord) -> bool:
        """Export what is new of `record` to one exporter; True once its end is exported. A failing exporter is
        retried at the next poll from where it stopped."""
        state = TrackingState(self.client, record.id)
        if state.get(f"{exporter.name}:done"):
            return True
        try:
            steps_done = int(state.get(f"{exporter.name}:steps") or 0)
            entries = self.run_store.metrics(record.id, since=steps_done)[:MAX_ENTRIES_PER_POLL]
            if entries:
                exporter.steps(record, state, entries)
                state.set(f"{exporter.name}:steps", steps_done + len(entries))
            evals_done = int(state.get(f"{exporter.name}:evals") or 0)
            if len(record.evals) > evals_done:
                exporter.evals(record, state, record.evals[evals_done:])
                state.set(f"{exporter.name}:evals", len(record.evals))
            if record.finished and len(entries) < MAX_ENTRIES_PER_POLL:
                exporter.finish(record, state)
                state.set(f"{exporter.name}:done", 1)
                log.info("run %s exported to %s", record.id, exporter.name)
                return True
        except Exception as err:  # a tracking server's error must not stop the other runs or exporters
            log.warning("run %s: export to %s failed, retried at the next poll: %s: %s", record.id, exporter.name,
                        type(err).__name__, err)
        return False
