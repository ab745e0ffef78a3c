"""The sweep's PNG plots: one line per setting, a band of ± one standard error over its seeds.

- accuracy_vs_step.png and accuracy_vs_time.png: held-out accuracy (the reward model's mean score on a set it
  scores) per evaluation set, against the trainer step and against the run's wall time;
- length_entropy.png: response length and entropy against step (the paper's figures on length and entropy
  collapse).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

from semirl.sweep.grid import Setting
from semirl.sweep.report import Estimate
from semirl.sweep.results import CellResult, EvalPoint

PLOTS = ("accuracy_vs_step.png", "accuracy_vs_time.png", "length_entropy.png")


def _pyplot():  # noqa: ANN202 - matplotlib is the `sweep` extra: imported only when plotting
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(points_by_seed: list[dict[int, tuple[float, float]]]) -> tuple[list[float], list[float], list[float]]:
    """Per step present in every seed: (mean x, mean y, stderr y); each seed maps step -> (x, y)."""
    steps = sorted(set.intersection(*(set(p) for p in points_by_seed))) if points_by_seed else []
    xs, ys, errs = [], [], []
    for step in steps:
        y = Estimate.of([p[step][1] for p in points_by_seed])
        if y is None:
            continue
        xs.append(statistics.fmean(p[step][0] for p in points_by_seed))
        ys.append(y.mean)
        errs.append(y.stderr or 0.0)
    return xs, ys, errs


def _draw(ax, xs: list[float], ys: list[float], errs: list[float], label: str) -> None:  # noqa: ANN001
    (line,) = ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.fill_between(xs, [y - e for y, e in zip(ys, errs, strict=True)], [y + e for y, e in zip(ys, errs, strict=True)],
                    color=line.get_color(), alpha=0.2, linewidth=0)


def _eval_value(point: EvalPoint) -> float:
    return point.mean_score if point.mean_score is not None else point.accuracy


def _eval_plot(path: Path, settings: list[Setting], results: list[CellResult],
               x_of: Callable[[EvalPoint], float | None], xlabel: str) -> None:
    plt = _pyplot()
    eval_sets = list(dict.fromkeys(e.eval_set for r in results for e in r.evals))
    fig, axes = plt.subplots(1, max(1, len(eval_sets)), figsize=(6.5 * max(1, len(eval_sets)), 4.2), squeeze=False)
    for ax, eval_set in zip(axes[0], eval_sets, strict=False):
        scored = any(e.mean_score is not None for r in results for e in r.evals if e.eval_set == eval_set)
        for setting in settings:
            seeds = [{e.step: (x, _eval_value(e)) for e in r.evals if e.eval_set == eval_set
                      and (x := x_of(e)) is not None}
                     for r in results if r.setting == setting.name and r.state == "succeeded"]
            seeds = [s for s in seeds if s]
            if seeds:
                _draw(ax, *_series(seeds), label=setting.name)
        ax.set_title(f"held-out {'reward-model score' if scored else 'accuracy'}: {eval_set}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean score" if scored else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curve_plot(path: Path, settings: list[Setting], results: list[CellResult]) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    for ax, metric, title in ((axes[0], "response_tokens", "response length (tokens)"),
                              (axes[1], "entropy", "entropy (nats per token)")):
        for setting in settings:
            seeds = [{c.step: (float(c.step), c.values[metric]) for c in r.curve if metric in c.values}
                     for r in results if r.setting == setting.name and r.state == "succeeded"]
            seeds = [s for s in seeds if s]
            if seeds:
                _draw(ax, *_series(seeds), label=setting.name)
        ax.set_title(title)
        ax.set_xlabel("trainer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(out: Path, settings: list[Setting], results: list[CellResult]) -> list[Path]:
    paths = [out / name for name in PLOTS]
    _eval_plot(paths[0], settings, results, lambda e: float(e.step), "trainer step")
    _eval_plot(paths[1], settings, results, lambda e: e.elapsed_s, "wall time since the run started (s)")
    _curve_plot(paths[2], settings, results)
    return paths

