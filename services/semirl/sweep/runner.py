"""Run a sweep's cells one after another on a running controller, keeping each result in the results directory.

The directory is the sweep's memory, so a re-run resumes: `sweep.json` holds the plan (base spec, shared
overrides, settings, seeds) and a re-run with another plan is refused rather than mixed in; `runs/<cell>.json`
holds a finished cell (a succeeded one is never run again); `runs/<cell>.submitted` holds the run id of a cell
in flight, so a sweep stopped while a run went on follows that run instead of submitting it twice. Run names
carry `sweep.id` and the cell's place, so even a run submitted just before the stop (its id not yet noted) is
found on the controller by name.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from semirl.client import TERMINAL, ControllerClient
from semirl.core.files import write_text_atomically
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

    def specs(self, sweep_id: str) -> dict[str, dict[str, Any]]:
        """Every cell's spec, validated before the first run starts; run names carry the sweep's id and the cell's
        place, so a run this sweep submitted is found by name on the controller."""
        specs = {}
        for index, cell in enumerate(self.cells()):
            spec = cell_spec(self.base_spec, self.constants, cell, run_name(sweep_id, index, cell))
            validated(spec, cell)
            specs[cell.key] = spec
        return specs


def run_name(sweep_id: str, index: int, cell: Cell) -> str:
    return f"sweep-{sweep_id}-{index:03d}-{cell.key}"[:63].rstrip("-._")


class SweepDirectory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs = root / "runs"

    def sweep_id(self) -> str:
        """The id a resumed directory holds, or a new one (written by `claim`)."""
        path = self.root / "sweep.id"
        return path.read_text().strip() if path.exists() else secrets.token_hex(3)

    def claim(self, plan: SweepPlan, sweep_id: str) -> None:
        """Start a results directory, or resume one holding the same plan."""
        path = self.root / "sweep.json"
        if path.exists():
            stored = SweepPlan.model_validate_json(path.read_text())
            if stored != plan:
                raise ValueError(f"{self.root} holds another sweep (its sweep.json differs): resume it with the same "
                                 "spec and options, or give another --out")
        self.runs.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.root / "sweep.id", sweep_id)
        write_text_atomically(path, plan.model_dump_json(indent=2))

    def result(self, cell: Cell) -> CellResult | None:
        path = self.runs / f"{cell.key}.json"
        return CellResult.model_validate_json(path.read_text()) if path.exists() else None

    def results(self) -> list[CellResult]:
        return [CellResult.model_validate_json(p.read_text()) for p in sorted(self.runs.glob("*.json"))]

    def save(self, result: CellResult) -> None:
        write_text_atomically(self.runs / f"{result.key}.json", result.model_dump_json(indent=2))
        (self.runs / f"{result.key}.submitted").unlink(missing_ok=True)

    def submitted(self, cell: Cell) -> str | None:
        path = self.runs / f"{cell.key}.submitted"
        return path.read_text().strip() if path.exists() else None

    def mark_submitted(self, cell: Cell, run_id: str) -> None:
        write_text_atomically(self.runs / f"{cell.key}.submitted", run_id)


def prepare(plan: SweepPlan, directory: SweepDirectory) -> dict[str, dict[str, Any]]:
    """Every cell's spec, validated, then the directory claimed: a bad setting fails here, before anything runs or
    the directory is written (a corrected command must not be refused as another sweep)."""
    sweep_id = directory.sweep_id()
    specs = plan.specs(sweep_id)
    directory.claim(plan, sweep_id)
    return specs


def run_sweep(
    plan: SweepPlan,
    specs: dict[str, dict[str, Any]],
    directory: SweepDirectory,
    client: ControllerClient,
    clock: GeneratorClock,
    *,
    generators: int,
    run_timeout_s: float = 3600.0,
    progress: bool = False,
    on_result: Callable[[CellResult], None] | None = None,
) -> list[CellResult]:
    """Run every cell without a succeeded result (`specs`: `prepare`'s); return the directory's results."""
    for cell in plan.cells():
        done = directory.result(cell)
        if done is not None and done.state == "succeeded":
            continue
        spec = specs[cell.key]
        run_id = _resumable(client, directory.submitted(cell)) or _submitted_by_name(client, spec["name"])
        resumed = run_id is not None
        if run_id is None:
            run_id = client.submit_spec(spec)["id"]
            log.info("sweep: %s submitted as %s", cell.key, run_id)
        directory.mark_submitted(cell, run_id)
        record, busy, observed_s = _followed(client, clock, run_id, run_timeout_s, progress=progress)
        # A run followed after a restart was partly outside the clock's readings: no idle fraction for it.
        result = collect(cell.key, cell.setting.name, cell.seed, record, client.metrics(run_id),
                         None if resumed else busy, observed_s, generators)
        directory.save(result)
        if on_result is not None:
            on_result(result)
    return directory.results()


def _followed(client: ControllerClient, clock: GeneratorClock, run_id: str, timeout_s: float, *,
              progress: bool) -> tuple[dict[str, Any], float | None, float]:
    """Follow the run to its end: its final record, the generators' busy seconds and the seconds observed, from
    when the run left the queue (generation for runs ahead of it is not its own)."""
    deadline = time.monotonic() + timeout_s
    while client.run(run_id)["state"] == "queued":
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still queued after {timeout_s:.0f}s")
        time.sleep(0.2)
    before, started = clock.busy_seconds(), time.monotonic()
    record = client.wait(run_id, timeout=max(1.0, deadline - time.monotonic()), progress=progress)
    after, observed_s = clock.busy_seconds(), time.monotonic() - started
    return record, (after - before if before is not None and after is not None else None), observed_s


def _resumable(client: ControllerClient, run_id: str | None) -> str | None:
    """The run a stopped sweep left in flight, when the controller still has it and it did not fail. Only "no
    such run" means submit again: a controller that does not answer is an error, not a licence to run twice."""
    record = client.find_run(run_id) if run_id is not None else None
    if record is None or record["state"] in TERMINAL and record["state"] != "succeeded":
        return None
    return run_id


def _submitted_by_name(client: ControllerClient, name: str) -> str | None:
    """A run of this cell that the sweep submitted but was stopped before it noted the id."""
    for run in reversed(client.runs()):
        if run["name"] == name and run["state"] not in ("failed", "cancelled"):
            return str(run["id"])
    return None

