"""Benchmark: what a commit waits for, with the trainer state written before it (the old order) and after it.

A real DeepSpeed TrainingEngine (ZeRO-1, float32, AdamW) on the ~112M-parameter Llama of bench/commit_path.py,
after one DPO step so that Adam's moments exist. Alternating repetitions, each on a clean run directory:
- before: `TrainerCheckpoints.save` as it was called ahead of the commit (policy version, then trainer state:
  DeepSpeed's model and optimizer states, ~3x the policy's bytes here) — the commit waits for all of it;
- after: `save_policy` (the commit waits only for this), then `save_trainer_state` (measured, off the path).
It reports the median seconds to the commit point of each order and their ratio, and what the state write costs.

    python -m bench.checkpoint_order [--reps 5] [--out bench/results/checkpoint_order.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from bench.commit_path import _git_commit, _model
from semirl.spec import RunSpec
from semirl.tinymodel.tokenizer import train_tokenizer
from semirl.trainer.checkpoint_writer import TrainerCheckpoints
from semirl.trainer.engine import TrainingEngine
from semirl.trainer.objectives import StepExamples
from semirl.trainer.pairs import Pair
from semirl.trainer.ranks import RankDriver, RankWorker

RUN_ID = "bench-checkpoint-order"


class _Holding(RankWorker):
    """The rank worker of a world of one around an engine built here."""

    def __init__(self, engine: TrainingEngine) -> None:
        super().__init__(engine.ranks)
        self.engine = engine


def _engine(seed_dir: Path) -> TrainingEngine:
    spec = RunSpec.model_validate({
        "name": "bench", "model": {"path": str(seed_dir), "dtype": "float32"},
        "data": {"train": {"path": "unused.jsonl"}}, "sync": {"interval": 1},
        "train": {"steps": 10, "batch_prompts": 2, "micro_batch_pairs": 2}, "deepspeed": {"zero_stage": 1},
    })
    engine = TrainingEngine(spec)
    generator = torch.Generator().manual_seed(0)

    def tokens(n: int) -> tuple[int, ...]:
        return tuple(int(t) for t in torch.randint(3, 300, (n,), generator=generator))

    pairs = [Pair(f"t1-{i}", 0, tokens(8), tokens(12), tokens(10), 0, 1) for i in range(2)]
    engine.train_step(StepExamples(examples=pairs, prompts=2))  # Adam's moments exist from here on
    return engine


def _timed(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _clean(store: TrainerCheckpoints) -> None:
    shutil.rmtree(store.paths.run_dir, ignore_errors=True)
    os.sync()


def _bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def run(workdir: Path, reps: int) -> dict[str, Any]:
    shutil.rmtree(workdir, ignore_errors=True)
    seed_dir = workdir / "seed"
    _model(seed=0).save_pretrained(seed_dir)
    train_tokenizer(["0123456789 + - * = answer"], vocab_size=300).save_pretrained(seed_dir)
    engine = _engine(seed_dir)
    driver = RankDriver(engine.ranks, _Holding(engine))
    store = TrainerCheckpoints(workdir / "store", RUN_ID, None, str(seed_dir))
    step = engine.step
    parameters = sum(p.numel() for p in engine.module.parameters())
    rows: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    sizes: dict[str, int] = {}
    for rep in range(reps + 1):  # rep 0 warms up
        for order in (("before", "after") if rep % 2 == 0 else ("after", "before")):
            _clean(store)
            if order == "before":
                measured = {"to_commit_s": _timed(lambda: store.save(driver, step, {}))}
            else:
                to_commit = _timed(lambda: store.save_policy(driver, step))
                measured = {"to_commit_s": to_commit,
                            "state_after_commit_s": _timed(lambda: store.save_trainer_state(driver, step, {}))}
            sizes = {"policy_bytes": _bytes(store.paths.policy_dir(step)),
                     "trainer_state_bytes": _bytes(store.paths.trainer_dir(step))}
            if rep > 0:
                rows[order].append(measured)
    engine.close()
    shutil.rmtree(workdir, ignore_errors=True)
    medians = {order: {part: statistics.median(r[part] for r in order_rows) for part in order_rows[0]}
               for order, order_rows in rows.items()}
    return {
        "machine": f"{os.cpu_count()}-core CPU machine ({platform.machine()}), shared, noisy",
        "commit": _git_commit(),
        "model": {"parameters": parameters, "dtype": "float32",
                  "zero_stage": 1, **sizes},
        "reps": reps,
        "median_s": medians,
        "ratio_commit_wait_after_over_before": medians["after"]["to_commit_s"] / medians["before"]["to_commit_s"],
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/checkpoint_order.json"))
    parser.add_argument("--workdir", type=Path, default=Path(".semirl/bench-checkpoint-order"))
    args = parser.parse_args()
    results = run(args.workdir, args.reps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "rows"}, indent=2))
    print(f"a commit waits {results['ratio_commit_wait_after_over_before']:.2f}x as long with the trainer state "
          "written after it")


if __name__ == "__main__":
    main()
