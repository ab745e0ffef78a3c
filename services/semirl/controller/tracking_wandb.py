"""W&B export of a run: one W&B run per semirl run (its id), the spec as config, every step's metrics at their step,
evaluations against their own `eval/step` axis (W&B drops a `step` lower than one already logged), the final
counters in the summary. Offline mode writes the run under the directory for a later `wandb sync`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from semirl.core.runstate import RunRecord

from .tracking import TrackingState, eval_metrics, final_metrics, step_metrics


class WandbExporter:
    name = "wandb"

    def __init__(self, mode: str, project: str, directory: Path) -> None:
        self.mode = mode
        self.project = project
        self.directory = directory
        self.runs: dict[str, Any] = {}

    def _run(self, record: RunRecord) -> Any:
        run = self.runs.get(record.id)
        if run is not None:
            return run
        import wandb

        self.directory.mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=self.project, name=record.name, id=record.id, dir=str(self.directory),
                         mode=self.mode, config=record.spec.model_dump(mode="json"), resume="allow",
                         reinit="create_new", settings=wandb.Settings(silent=True, console="off"))
        run.define_metric("eval/step")
        run.define_metric("eval/*", step_metric="eval/step")
        self.runs[record.id] = run
        return run

    def steps(self, record: RunRecord, state: TrackingState, entries: Sequence[dict[str, Any]]) -> None:
        run = self._run(record)
        for entry in entries:
            run.log(step_metrics(entry), step=int(entry["step"]))

    def evals(self, record: RunRecord, state: TrackingState, results: Sequence[Any]) -> None:
        run = self._run(record)
        for result in results:
            run.log({"eval/step": int(result.step), **eval_metrics(result)})  # a row each, on the eval/step axis

    def finish(self, record: RunRecord, state: TrackingState) -> None:
        run = self._run(record)
        run.summary.update({"state": record.state, **final_metrics(record)})
        if record.error:
            run.summary["error"] = record.error
        run.finish(exit_code=0 if record.state == "succeeded" else 1)
        self.runs.pop(record.id, None)
