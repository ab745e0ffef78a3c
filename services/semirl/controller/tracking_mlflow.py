"""MLflow export of a run: one MLflow run per semirl run (tag `semirl.run_id`), the spec as params and spec.json,
every step's metrics at their step, evaluations, final counters, and the terminal status."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from semirl.core.runstate import RunRecord

from .tracking import TrackingState, eval_metrics, final_metrics, step_metrics

BATCH = 1000            # MLflow's log_batch takes at most 1000 metrics
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


def flat(value: Any, prefix: str = "") -> dict[str, str]:
    """A nested spec as dotted params (lists as JSON)."""
    if isinstance(value, dict):
        found: dict[str, str] = {}
        for key, inner in value.items():
            found.update(flat(inner, f"{prefix}{key}."))
        return found
    text = json.dumps(value) if isinstance(value, list) else str(value)
    return {prefix.rstrip("."): text[:MAX_PARAM_CHARS]}


class MlflowExporter:
    name = "mlflow"

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment = experiment

    def _run_id(self, record: RunRecord, state: TrackingState) -> str:
        known = state.get("mlflow:run")
        if known:
            return known
        from mlflow.entities import Param, RunTag

        experiment = self.client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.experiment)
        run = self.client.create_run(experiment_id, run_name=record.name, start_time=int(
            (record.started_at or record.created_at) * 1000), tags={"semirl.run_id": record.id})
        run_id = run.info.run_id
        state.set("mlflow:run", run_id)  # before anything else: a retry must not make a second MLflow run
        spec = record.spec.model_dump(mode="json")
        params = [Param(k, v) for k, v in sorted(flat(spec).items())]
        for start in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[start:start + 100])
        self.client.log_dict(run_id, spec, "spec.json")
        self.client.log_batch(run_id, tags=[RunTag("semirl.algorithm", record.spec.algorithm)])
        return run_id

    def _log(self, run_id: str, rows: list[tuple[int, float, dict[str, float]]]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(k, v, int(at * 1000), step) for step, at, values in rows for k, v in values.items()]
        for start in range(0, len(metrics), BATCH):
            self.client.log_batch(run_id, metrics=metrics[start:start + BATCH])

    def steps(self, record: RunRecord, state: TrackingState, entries: Sequence[dict[str, Any]]) -> None:
        run_id = self._run_id(record, state)
        self._log(run_id, [(int(e["step"]), float(e.get("time") or time.time()), step_metrics(e)) for e in entries])

    def evals(self, record: RunRecord, state: TrackingState, results: Sequence[Any]) -> None:
        run_id = self._run_id(record, state)
        self._log(run_id, [(int(r.step), time.time(), eval_metrics(r)) for r in results])

    def finish(self, record: RunRecord, state: TrackingState) -> None:
        run_id = self._run_id(record, state)
        self._log(run_id, [(record.step, record.finished_at or time.time(), final_metrics(record))])
        if record.error:
            from mlflow.entities import RunTag

            self.client.log_batch(run_id, tags=[RunTag("semirl.error", record.error[:5000])])
        self.client.set_terminated(run_id, status=STATUS.get(record.state, "FINISHED"),
                                   end_time=int((record.finished_at or time.time()) * 1000))
