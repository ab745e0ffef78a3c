"""Benchmark: the cost of weight syncs. Runs the same tiny DPO job online (s = 1) and semi-online (s = 4) on
the real local stack, in the same process and machine, and reports the semi-online speed-up as a ratio
against the online baseline, plus the mean gap between consecutive trainer steps at window boundaries
(the bubble: commit + reload + first batch) and inside windows.

    python -m bench.sync_bubble [--steps 12] [--out bench/results/sync_bubble.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from semirl.client import ControllerClient
from semirl.core.redis_server import free_port
from semirl.local.stack import LocalStack
from semirl.tinymodel.build import build_tiny_setup


def _spec(setup: Any, interval: int, steps: int) -> dict[str, Any]:
    return {
        "name": f"bench-s{interval}",
        "model": {"path": str(setup.model_dir), "max_model_len": 128},
        "data": {"train": {"path": str(setup.train_path)}},
        "sampling": {"n": 8, "temperature": 1.0, "max_tokens": 24},
        "sync": {"interval": interval},
        "train": {"steps": steps, "batch_prompts": 16, "micro_batch_pairs": 16},
        "optim": {"lr": 3e-4, "adam_eps": 1e-8, "grad_clip": 1.0},
    }


def _gaps(metrics: list[dict[str, Any]], interval: int) -> dict[str, float]:
    """Mean wall-clock gap before each step, split into window-boundary steps and steps inside a window."""
    times = {int(m["step"]): float(m["time"]) for m in metrics if "time" in m}
    boundary, inside = [], []
    for step in sorted(times):
        if step - 1 in times:
            gap = times[step] - times[step - 1]
            (boundary if (step - 1) % interval == 0 else inside).append(gap)
    return {
        "boundary_gap_s": statistics.mean(boundary) if boundary else float("nan"),
        "inside_gap_s": statistics.mean(inside) if inside else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("bench/results/sync_bubble.json"))
    parser.add_argument("--workdir", type=Path, default=Path(".semirl/bench"))
    args = parser.parse_args()

    setup = build_tiny_setup(Path(".semirl/tiny"), seed=0)
    results: dict[str, Any] = {"steps": args.steps, "runs": {}}
    with LocalStack(workdir=args.workdir, store=(args.workdir / "store").resolve(), http_port=free_port()) as stack:
        client = ControllerClient(stack.url)
        # Unmeasured warm-up: the first run pays vLLM's engine build and the trainer's first DeepSpeed set-up.
        warmup = args.workdir / "bench-warmup.yaml"
        warmup.write_text(yaml.safe_dump({**_spec(setup, 1, 2), "name": "bench-warmup"}))
        client.wait(client.submit(warmup)["id"], timeout=1800)
        for interval in (1, 4):
            spec_path = args.workdir / f"bench-s{interval}.yaml"
            spec_path.write_text(yaml.safe_dump(_spec(setup, interval, args.steps)))
            started = time.monotonic()
            run_id = client.submit(spec_path)["id"]
            record = client.wait(run_id, timeout=1800)
            wall = time.monotonic() - started
            if record["state"] != "succeeded":
                raise SystemExit(f"benchmark run failed: {record.get('error')}")
            results["runs"][f"s{interval}"] = {
                "wall_s": wall,
                "syncs": record["syncs"],
                "steps_per_s": args.steps / wall,
                **_gaps(client.metrics(run_id), interval),
            }
    online, semi = results["runs"]["s1"], results["runs"]["s4"]
    results["speedup_semi_online_vs_online"] = online["wall_s"] / semi["wall_s"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
