"""The sweep's table: one row per setting, each figure a mean over its seeds (± one standard error)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from semirl.sweep.grid import Setting
from semirl.sweep.results import CellResult, EvalPoint


class Estimate(BaseModel):
    mean: float
    stderr: float | None = Field(description="Standard error of the mean over seeds; null with one seed.")
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Estimate | None:
        values = [v for v in values if math.isfinite(v)]
        if not values:
            return None
        stderr = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
        return cls(mean=statistics.fmean(values), stderr=stderr, n=len(values))

    def text(self, scale: float = 1.0, digits: int = 1) -> str:
        spread = f" ± {self.stderr * scale:.{digits}f}" if self.stderr is not None else ""
        return f"{self.mean * scale:.{digits}f}{spread}"


class EvalSetRow(BaseModel):
    eval_set: str
    accuracy: Estimate | None = Field(description="Held-out accuracy at the last evaluated step (a fraction).")
    seed_accuracy: Estimate | None = Field(description="The seed model's (step 0).")
    gain: Estimate | None = Field(description="Last minus step 0, per seed, then averaged (a fraction); null when "
                                  "the seed model was not evaluated.")
    mean_score: Estimate | None = None
    mean_score_per_token: Estimate | None = None


class SettingRow(BaseModel):
    setting: str
    seeds: int = Field(description="Seeds whose run succeeded.")
    failed: int
    eval_sets: list[EvalSetRow]
    wall_s: Estimate | None
    syncs: Estimate | None
    generator_idle_fraction: Estimate | None
    trainer_wait_fraction: Estimate | None
    train_samples_per_s: Estimate | None


def _last_and_seed(evals: list[EvalPoint], eval_set: str) -> tuple[EvalPoint, EvalPoint | None] | None:
    """The set's last evaluation and its step-0 one (None when the seed was not evaluated)."""
    points = sorted((e for e in evals if e.eval_set == eval_set), key=lambda e: e.step)
    if not points:
        return None
    return points[-1], points[0] if points[0].step == 0 else None


def eval_set_row(eval_set: str, results: list[CellResult]) -> EvalSetRow:
    ends = [pair for r in results if (pair := _last_and_seed(r.evals, eval_set)) is not None]

    def over(value: Callable[[EvalPoint], float | None]) -> Estimate | None:
        return Estimate.of([v for last, _ in ends if (v := value(last)) is not None])

    return EvalSetRow(
        eval_set=eval_set,
        accuracy=over(lambda e: e.accuracy),
        seed_accuracy=Estimate.of([seed.accuracy for _, seed in ends if seed is not None]),
        gain=Estimate.of([last.accuracy - seed.accuracy for last, seed in ends if seed is not None]),
        mean_score=over(lambda e: e.mean_score),
        mean_score_per_token=over(lambda e: e.mean_score_per_token),
    )


def setting_rows(settings: list[Setting], results: list[CellResult]) -> list[SettingRow]:
    rows = []
    for setting in settings:
        mine = [r for r in results if r.setting == setting.name]
        ok = [r for r in mine if r.state == "succeeded"]
        eval_sets = list(dict.fromkeys(e.eval_set for r in ok for e in r.evals))
        rows.append(SettingRow(
            setting=setting.name, seeds=len(ok), failed=len(mine) - len(ok),
            eval_sets=[eval_set_row(name, ok) for name in eval_sets],
            wall_s=Estimate.of([r.wall_s for r in ok]),
            syncs=Estimate.of([float(r.syncs) for r in ok]),
            generator_idle_fraction=Estimate.of(
                [r.generator_idle_fraction for r in ok if r.generator_idle_fraction is not None]),
            trainer_wait_fraction=Estimate.of([r.trainer_wait_fraction for r in ok]),
            train_samples_per_s=Estimate.of([r.train_samples_per_s for r in ok]),
        ))
    return rows


def _cell(estimate: Estimate | None, scale: float = 1.0, digits: int = 1) -> str:
    return estimate.text(scale, digits) if estimate is not None else "–"


def markdown_table(rows: list[SettingRow]) -> str:
    eval_sets = list(dict.fromkeys(s.eval_set for row in rows for s in row.eval_sets))
    scored = {s.eval_set for row in rows for s in row.eval_sets if s.mean_score is not None}
    header = ["setting", "seeds"]
    for name in eval_sets:
        header += [f"{name}: accuracy %", f"{name}: gain (points)"]
        if name in scored:
            header += [f"{name}: RM score", f"{name}: score / token"]
    header += ["wall s", "syncs", "generator idle", "trainer wait", "train samples/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        by_set = {s.eval_set: s for s in row.eval_sets}
        cells = [row.setting, f"{row.seeds}" + (f" ({row.failed} failed)" if row.failed else "")]
        for name in eval_sets:
            s = by_set.get(name)
            cells += [_cell(s.accuracy if s else None, 100), _cell(s.gain if s else None, 100)]
            if name in scored:
                cells += [_cell(s.mean_score if s else None, digits=3),
                          _cell(s.mean_score_per_token if s else None, digits=4)]
        cells += [_cell(row.wall_s, digits=0), _cell(row.syncs, digits=0),
                  _cell(row.generator_idle_fraction, digits=2), _cell(row.trainer_wait_fraction, digits=2),
                  _cell(row.train_samples_per_s, digits=0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ordering(rows: list[SettingRow]) -> str | None:
    """'offline DPO 61.2 < online DPO 70.3 < …': the settings by final accuracy on the first evaluation set."""
    ranked = []
    for row in rows:
        if row.eval_sets and row.eval_sets[0].accuracy is not None:
            ranked.append((row.eval_sets[0].accuracy.mean, row.setting))
    if not ranked:
        return None
    name = rows[0].eval_sets[0].eval_set if rows[0].eval_sets else "the first set"
    ranked.sort()
    return f"by final accuracy on {name}: " + " < ".join(f"{s} {100 * a:.1f}" for a, s in ranked)


def write_report(root: Path, settings: list[Setting], results: list[CellResult]) -> list[Path]:
    """table.md, table.json and the plots into the results directory; returns the files written."""
    from semirl.sweep.plots import write_plots

    rows = setting_rows(settings, results)
    order = ordering(rows)
    table = markdown_table(rows) + (f"\n\nOrdering {order}.\n" if order else "\n")
    (root / "table.md").write_text(table)
    (root / "table.json").write_text(json.dumps(
        {"rows": [r.model_dump() for r in rows], "ordering": order,
         "runs": [{"key": r.key, "setting": r.setting, "seed": r.seed, "run_id": r.run_id, "state": r.state,
                   "wall_s": r.wall_s} for r in results]}, indent=2))
    return [root / "table.md", root / "table.json", *write_plots(root, settings, results)]
