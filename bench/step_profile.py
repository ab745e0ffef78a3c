"""Benchmark: where a step's time goes, from the run's own per-step metrics.

Runs the demo spec (examples/tiny-math-dpo.yaml, shortened with --steps) on the real local stack and breaks the
wall time between consecutive steps into what the trainer and controller report with every step:
- waiting for the step's scored groups (`wait_seconds`: generation, scoring, and the queues),
- reference forwards, policy forward + backward, the optimizer step (`time_*_s`, trainer rank 0),
- the checkpoint before the step: policy write, commit (controller verification), trainer state,
- the generators' reload of a newly synced version (`reload_s`, on a window's first step).
Means over the measured steps (the first window, which pays engine builds, is left out) and each part's share
of the mean step-to-step time; JSON to --out.

    python -m bench.step_profile [--steps 24] [--out bench/results/step_profile.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import yaml

from semirl.cli import preload_args
from semirl.client import ControllerClient
from semirl.core.redis_server import free_port
from semirl.local.stack import LocalStack
from semirl.tinymodel.build import build_tiny_setup

PARTS = ("wait_seconds", "time_reference_s", "time_forward_backward_s", "time_optimizer_s",
         "checkpoint_policy_s", "checkpoint_commit_s", "checkpoint_state_s", "reload_s")


def breakdown(metrics: list[dict[str, Any]], skip_steps: int) -> dict[str, Any]:
    """Mean seconds per step of each part, the mean step-to-step time and each part's share of it."""
    rows = sorted((m for m in metrics if "step" in m), key=lambda m: m["step"])
    measured = [m for m in rows if m["step"] > skip_steps]
    gaps = [b["time"] - a["time"] for a, b in zip(rows, rows[1:], strict=False) if b["step"] > skip_steps]
    step_time = statistics.mean(gaps) if gaps else float("nan")
    means = {part: statistics.mean(float(m.get(part, 0.0)) for m in measured) for part in PARTS}
    return {"steps_measured": len(measured), "mean_step_to_step_s": step_time, "mean_s": means,
            "share_of_step": {part: seconds / step_time for part, seconds in means.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--spec", type=Path, default=Path("examples/tiny-math-dpo.yaml"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/step_profile.json"))
    parser.add_argument("--workdir", type=Path, default=Path(".semirl/bench-profile"))
    args = parser.parse_args()

    build_tiny_setup(Path(".semirl/tiny"), seed=0)
    spec = yaml.safe_load(args.spec.read_text())
    spec["train"]["steps"] = args.steps
    spec["data"]["eval"] = []  # the profile is of training; evaluation rounds would share the generators
    args.workdir.mkdir(parents=True, exist_ok=True)
    spec_path = args.workdir / "profile.yaml"
    spec_path.write_text(yaml.safe_dump({**spec, "name": "step-profile"}))
    with LocalStack(workdir=args.workdir, store=(args.workdir / "store").resolve(), http_port=free_port(),
                    generator_args=preload_args(spec_path)) as stack:
        client = ControllerClient(stack.url)
        record = client.wait(client.submit(spec_path)["id"], timeout=3600)
        if record["state"] != "succeeded":
            raise SystemExit(f"profiled run failed: {record.get('error')}")
        metrics = client.metrics(record["id"])
    interval = int(spec["sync"]["interval"])
    results = {"machine": f"{os.cpu_count()}-core CPU machine ({platform.machine()}), shared, noisy",
               "spec": str(args.spec), "steps": args.steps, "sync_interval": interval,
               **breakdown(metrics, skip_steps=interval), "metrics": metrics}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "metrics"}, indent=2))


if __name__ == "__main__":
    main()
