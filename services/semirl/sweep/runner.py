"""Run a sweep's cells one after another on a running controller, keeping each result in the results directory.

The directory is the sweep's memory, so a re-run resumes: `sweep.json` holds the plan (base spec, shared
overrides, settings, seeds) and a re-run with another plan is refused rather than mixed in; `runs/<cell>.json`
holds a finished cell (a succeeded one is never run again); `runs/<cell>.submitted` holds the run id of a cell
in flight, so a sweep stopped while a run went on follows that run instead of submitting it twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from semirl.client import TERMINAL, ControllerClient
from semirl.sweep.grid import Cell, Setting, cell_spec, validated
from semirl.sweep.results import CellResult, GeneratorClock, collect

log = logging.getLogger(__name__)


class SweepPlan(BaseModel):
    base_spec: dict[str, Any]
    constants: dict[str, Any]
    settings: list[Setting]
    seeds: int

    def cells(self) -> list[Cell]:
        """Seed-major: every setting's first seed comes before any second, so a sweep cut short still compares
        every setting."""
        return [Cell(setting=s, seed=seed) for seed in range(self.seeds) for s in self.settings]

    def specs(self) -> dict[str, dict[str, Any]]:
        """Every cell's spec, validated before the first run starts."""
        specs = {}
        for cell in self.cells():
            spec = cell_spec(self.base_spec, self.constants, cell)
            validated(spec, cell)
            specs[cell.key] = spec
        return specs


class SweepDirectory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs = root / "runs"

    def claim(self, plan: SweepPlan) -> None:
        """Start a results directory, or resume one holding the same plan."""
        path = self.root / "sweep.json"
        if path.exists():
            stored = SweepPlan.model_validate_json(path.read_text())
            if stored != plan:
                raise ValueError(f"{self.root} holds another sweep (its sweep.json differs): resume it with the same "
                                 "spec and options, or give another --out")
        self.runs.mkdir(parents=True, exist_ok=True)
        path.write_text(plan.model_dump_json(indent=2))

    def result(self, cell: Cell) -> CellResult | None:
        path = self.runs / f"{cell.key}.json"
        return CellResult.model_validate_json(path.read_text()) if path.exists() else None

    def results(self) -> list[CellResult]:
        return [CellResult.model_validate_json(p.read_text()) for p in sorted(self.runs.glob("*.json"))]

    def save(self, result: CellResult) -> None:
        _write_atomically(self.runs / f"{result.key}.json", result.model_dump_json(indent=2))
        (self.runs / f"{result.key}.submitted").unlink(missing_ok=True)

    def submitted(self, cell: Cell) -> str | None:
        path = self.runs / f"{cell.key}.submitted"
        return path.read_text().strip() if path.exists() else None

    def mark_submitted(self, cell: Cell, run_id: str) -> None:
        _write_atomically(self.runs / f"{cell.key}.submitted", run_id)


def run_sweep(
    plan: SweepPlan,
    directory: SweepDirectory,
    client: ControllerClient,
    clock: GeneratorClock,
    *,
    generators: int,
    run_timeout_s: float = 3600.0,
    progress: bool = False,
    on_result: Callable[[CellResult], None] | None = None,
) -> list[CellResult]:
    """Run every cell without a succeeded result; return the directory's results."""
    specs = plan.specs()
    directory.claim(plan)
    for cell in plan.cells():
        done = directory.result(cell)
        if done is not None and done.state == "succeeded":
            continue
        run_id = _resumable(client, directory.submitted(cell))
        resumed = run_id is not None
        if run_id is None:
            run_id = client.submit_spec(specs[cell.key])["id"]
            directory.mark_submitted(cell, run_id)
            log.info("sweep: %s submitted as %s", cell.key, run_id)
        busy_before = clock.busy_seconds()
        record = client.wait(run_id, timeout=run_timeout_s, progress=progress)
        busy_after = clock.busy_seconds()
        busy = None
        # A run followed after a restart was partly outside the clock's readings: no idle fraction for it.
        if not resumed and busy_before is not None and busy_after is not None:
            busy = busy_after - busy_before
        result = collect(cell.key, cell.setting.name, cell.seed, record, client.metrics(run_id), busy, generators)
        directory.save(result)
        if on_result is not None:
            on_result(result)
    return directory.results()


def _resumable(client: ControllerClient, run_id: str | None) -> str | None:
    """The run a stopped sweep left in flight, when the controller still has it and it did not fail."""
    if run_id is None:
        return None
    try:
        record = client.run(run_id)
    except Exception:  # noqa: BLE001 - any answer but the run itself means "submit again"
        return None
    if record["state"] in TERMINAL and record["state"] != "succeeded":
        return None
    return run_id


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

