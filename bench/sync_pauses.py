"""Benchmark: the sync pause of example runs with `sync.transport` broadcast against storage, on the demo's stack.

Each named example spec (on the tiny model and task that `make demo` builds into .semirl/tiny) runs twice on one
local stack (one generator, one verifier, as `semirl demo`): once with `sync.transport: broadcast`, once with
`storage`. Reported per run: the trainer's `sync_pause_s` (its step's end to the version's release: the in-memory
commit, or the export's commit), median and max; how many syncs went in memory; held-out accuracy at the first and
last evaluation; wall time.

    python -m bench.sync_pauses tiny-math-dpo.yaml tiny-math-grpo.yaml [--out bench/results/sync_pauses_tiny.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from semirl.client import ControllerClient
from semirl.core.redis_server import free_port
from semirl.local.stack import LocalStack

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = REPO_ROOT / ".semirl" / "tiny" / "tiny_setup.json"


def _spec(example: str, transport: str, tiny: dict[str, Any], workdir: Path) -> Path:
    spec = yaml.safe_load((REPO_ROOT / "examples" / example).read_text())
    spec["model"]["path"] = tiny["model_dir"]
    data_dir = Path(tiny["train_path"]).parent
    spec["data"]["train"]["path"] = str(data_dir / Path(spec["data"]["train"]["path"]).name)
    spec["data"]["eval"][0]["path"] = tiny["eval_path"]
    spec["sync"] = {**spec.get("sync", {}), "transport": transport}
    spec["name"] = f"{spec['name']}-{transport}"
    path = workdir / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _measure(stack: LocalStack, client: ControllerClient, spec: Path) -> dict[str, Any]:
    started = time.monotonic()
    run_id = client.submit(spec)["id"]
    record = client.wait(run_id, timeout=1800)
    wall = time.monotonic() - started
    pauses = [m["sync_pause_s"] for m in client.metrics(run_id) if "sync_pause_s" in m]
    syncs = httpx.get(f"{stack.url}/v1/runs/{run_id}/syncs", timeout=30).json()
    evals = sorted(record["evals"], key=lambda e: e["step"])
    return {
        "state": record["state"], "wall_s": wall, "syncs": len(syncs),
        "in_memory_syncs": sum(s["transport"] == "broadcast" for s in syncs),
        "pause_median_s": statistics.median(pauses) if pauses else None,
        "pause_max_s": max(pauses) if pauses else None,
        "accuracy_first_last": [evals[0]["accuracy"], evals[-1]["accuracy"]] if evals else None,
        "pauses": pauses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("examples", nargs="+")
    parser.add_argument("--out", type=Path, default=Path("bench/results/sync_pauses_tiny.json"))
    args = parser.parse_args()
    tiny = json.loads(TINY.read_text())
    results: dict[str, Any] = {"machine": f"{os.cpu_count()}-core CPU machine ({platform.machine()}), shared, noisy"}
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        stack = LocalStack(workdir=workdir, store=workdir / "store", http_port=free_port(), generators=1,
                           verifiers=1)
        stack.start(timeout=300)
        try:
            client = ControllerClient(stack.url)
            for example in args.examples:
                for transport in ("broadcast", "storage"):
                    name = f"{Path(example).stem}-{transport}"
                    results[name] = _measure(stack, client, _spec(example, transport, tiny, workdir))
                    print(name, {k: v for k, v in results[name].items() if k != "pauses"}, flush=True)
        finally:
            stack.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
