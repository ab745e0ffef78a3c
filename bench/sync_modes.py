"""Benchmark: training throughput of online, semi-online and asynchronous training on the same work.

One stack (real Redis, vLLM, math-verify, DeepSpeed), the same spec three times but for `sync`:
- online:       s = 1, strict windows (each step's prompts are released when the previous step is committed);
- semi-online:  s = --interval (default 4), strict windows;
- asynchronous: s = 1, max_staleness = --staleness (default 1): generators sample the next window while the
  trainer trains, on whatever version they hold.
Throughput = trained samples (steps x batch_prompts x n) over the training phase, from the run's start to its
last step report; no evaluation rounds (they would share the generator). Also reported: mean staleness (optimizer
updates between sampling and training), drops, syncs, and the ratio of each mode's throughput to online's.

    python -m bench.sync_modes [--spec examples/tiny-math-grpo.yaml] [--steps 24] [--out bench/results/sync_modes.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from semirl.cli import preload_args
from semirl.client import ControllerClient
from semirl.core.redis_server import free_port
from semirl.local.stack import LocalStack
from semirl.tinymodel.build import build_tiny_setup


def modes(interval: int, staleness: int) -> dict[str, dict[str, Any]]:
    return {"online": {"interval": 1}, f"semi-online (s={interval})": {"interval": interval},
            f"asynchronous (s=1, k={staleness})": {"interval": 1, "max_staleness": staleness}}


def measure(client: ControllerClient, spec: dict[str, Any], spec_path: Path) -> dict[str, Any]:
    spec_path.write_text(yaml.safe_dump(spec))
    record = client.wait(client.submit(spec_path)["id"], timeout=3600)
    if record["state"] != "succeeded":
        raise SystemExit(f"{spec['name']} failed: {record.get('error')}")
    metrics = sorted((m for m in client.metrics(record["id"]) if "step" in m), key=lambda m: m["step"])
    seconds = metrics[-1]["time"] - record["started_at"]
    samples = spec["train"]["steps"] * spec["train"]["batch_prompts"] * spec["sampling"]["n"]
    return {
        "training_seconds": round(seconds, 2), "samples": samples, "samples_per_s": round(samples / seconds, 2),
        "staleness_mean": statistics.mean(m.get("staleness_mean", 0.0) for m in metrics),
        "staleness_max": max(m.get("staleness_max", 0.0) for m in metrics),
        "dropped": sum(m.get("dropped", 0.0) for m in metrics), "syncs": record["syncs"],
        "wait_seconds_mean": statistics.mean(m["wait_seconds"] for m in metrics),
        "reward_mean_last_quarter": statistics.mean(m["reward_mean"] for m in metrics[-max(1, len(metrics) // 4):]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=Path("examples/tiny-math-grpo.yaml"))
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--interval", type=int, default=4)
    parser.add_argument("--staleness", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/sync_modes.json"))
    parser.add_argument("--workdir", type=Path, default=Path(".semirl/bench-sync-modes"))
    args = parser.parse_args()

    build_tiny_setup(Path(".semirl/tiny"), seed=0)
    base = yaml.safe_load(args.spec.read_text())
    base["train"]["steps"] = args.steps
    base["data"]["eval"] = []
    base["eval"] = {k: v for k, v in base.get("eval", {}).items() if k != "every"}
    args.workdir.mkdir(parents=True, exist_ok=True)
    preload = args.workdir / "preload.yaml"
    preload.write_text(yaml.safe_dump({**base, "name": "preload"}))
    results: dict[str, Any] = {}
    load_before = os.getloadavg()
    with LocalStack(workdir=args.workdir, store=(args.workdir / "store").resolve(), http_port=free_port(),
                    generator_args=preload_args(preload)) as stack:
        client = ControllerClient(stack.url)
        for index, (mode, sync) in enumerate(modes(args.interval, args.staleness).items()):
            spec = {**base, "name": f"sync-modes-{index}", "sync": sync}
            results[mode] = measure(client, spec, args.workdir / f"mode-{index}.yaml")
            print(mode, json.dumps(results[mode]), flush=True)
    online = results["online"]["samples_per_s"]
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()}-core CPU machine ({platform.machine()}), shared, noisy",
        "load_before": [round(x, 2) for x in load_before], "spec": str(args.spec), "steps": args.steps,
        "algorithm": base.get("algorithm", "dpo"), "results": results,
        "throughput_vs_online": {mode: round(r["samples_per_s"] / online, 2) for mode, r in results.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["throughput_vs_online"], indent=2))


if __name__ == "__main__":
    main()
