"""Benchmark: the checkpoint commit path against a plain save + reload of the same weights.

One process, one vLLM engine (CPU settings of the generator service), a random Llama of ~112M parameters in
float32 (~450 MB of safetensors: bytes dominate, fixed costs do not). After one unmeasured warm-up, each
repetition measures, on freshly perturbed weights:

(a) the semirl path: the trainer's policy write (`staged_directory` around `save_pretrained` into the staging
    directory, whose writeback starts while it writes; then hashes + fsync, MANIFEST.json, rename), the
    controller's `verify`, the generator's `check_policy_dir` (files present at their sizes) and the in-place branch of
    `GenerationEngine.load` (`reload_weights` + `reset_prefix_cache`);
(b) the baseline: `save_pretrained` into a plain directory, `reload_weights`, `reset_prefix_cache`;
(c) for reference, the baseline made crash-safe: (b) with an fsync of each file and the directory after the save.

Before each measured path: earlier checkpoints deleted and `os.sync()` (see `_settle`); the baseline also gets an
unmeasured `os.sync()` between its save and its reload, so its writeback is free (the semirl path pays its own, as
fsync, inside the commit). It reports each part's median and best seconds, the ratio (a)/(b) of the summed part
medians (and of the median totals, and of the summed best times), (a)/(c), each part's throughput (GB/s, for
estimates at other sizes), and the raw speed of each candidate manifest hash on this machine.

On this shared VM the same save takes 0.15 s or 1+ s at random, in any path (apparently memory that the balloon
driver had reported free to the host: a save right after files are deleted is fast, one 3 s later mostly slow);
hence several summaries.

    python -m bench.commit_path [--reps 11] [--out bench/results/commit_path.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from semirl.core import checkpoint_store as checkpoints
from semirl.core.checkpoint_store import RunCheckpoints, staged_directory, verify
from semirl.generator.__main__ import apply_cpu_env_defaults
from semirl.generator.engine import EngineConfig, GenerationEngine, Policy, check_policy_dir
from semirl.tinymodel.tokenizer import train_tokenizer

RUN_ID = "bench-commit-path"


def _model(seed: int) -> LlamaForCausalLM:
    """~112M parameters; head_dim 64 (vLLM's CPU attention needs >= 32); untied head so both matrices count."""
    config = LlamaConfig(
        vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=10,
        num_attention_heads=12, num_key_value_heads=4, head_dim=64, max_position_embeddings=256,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0, torch_dtype="float32",
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def _timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _reload(engine: GenerationEngine, path: Path) -> None:
    engine.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(path)})
    engine.llm.reset_prefix_cache()


def _write_policy(model: LlamaForCausalLM, store: RunCheckpoints, version: int) -> float:
    """The trainer's policy write (trainer/checkpoint_writer.py); returns the seconds save_pretrained took."""
    with staged_directory(store.policy_dir(version), {"run_id": RUN_ID, "version": version}) as staging:
        save_s = _timed(lambda: model.save_pretrained(staging, state_dict=model.state_dict()))
    return save_s


def _semirl_path(model: LlamaForCausalLM, store: RunCheckpoints, engine: GenerationEngine, version: int) -> dict:
    started = time.perf_counter()
    save_s = _write_policy(model, store, version)
    write_s = time.perf_counter() - started
    path = store.policy_dir(version)
    return {
        "save_pretrained_s": save_s,
        "manifest_fsync_rename_s": write_s - save_s,
        "controller_verify_s": _timed(lambda: verify(path)),
        "generator_verify_s": _timed(lambda: check_policy_dir(path)),
        "reload_s": _timed(lambda: _reload(engine, path)),
    }


def _plain_path(model: LlamaForCausalLM, engine: GenerationEngine, directory: Path) -> dict:
    save_s = _timed(lambda: model.save_pretrained(directory, state_dict=model.state_dict()))
    os.sync()  # unmeasured: the baseline's writeback is free and does not slow its reload (a conservative ratio)
    return {"save_pretrained_s": save_s, "reload_s": _timed(lambda: _reload(engine, directory))}


def _durable_plain_path(model: LlamaForCausalLM, engine: GenerationEngine, directory: Path) -> dict:
    """The baseline made crash-safe the usual way: save, then fsync each file and the directory."""
    save_s = _timed(lambda: model.save_pretrained(directory, state_dict=model.state_dict()))
    return {
        "save_pretrained_s": save_s,
        "fsync_s": _timed(lambda: [_fsync(path) for path in [*directory.iterdir(), directory]]),
        "reload_s": _timed(lambda: _reload(engine, directory)),
    }


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _perturb(model: LlamaForCausalLM, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param), alpha=1e-4)


def _settle(store: RunCheckpoints, plain_root: Path) -> None:
    """Start each measured path alike: earlier checkpoints deleted and no dirty pages left to write back.

    Without this, whichever path ran second saved several times slower than the first (the first one's ~450 MB
    were still being written back), and the plain path's deferred writeback landed on whatever ran next.
    """
    store.retain(keep=0)
    shutil.rmtree(plain_root, ignore_errors=True)
    os.sync()


def _medians(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each part's median, their sum, and (for comparison) the median of the per-repetition totals."""
    parts = {name: statistics.median(row[name] for row in rows) for name in rows[0]}
    return {**parts, "sum_of_medians_s": sum(parts.values()),
            "median_total_s": statistics.median(sum(row.values()) for row in rows)}


def _minimums(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each part's best time and their sum: the cost without interference from the machine's other tenants."""
    parts = {name: min(row[name] for row in rows) for name in rows[0]}
    return {**parts, "sum_s": sum(parts.values())}


def _hash_speeds(size: int = 1 << 30) -> dict[str, float]:
    """GB/s of each candidate hash over an in-memory buffer in CHUNK_BYTES pieces (no I/O): the algorithm alone.

    blake3 (the `blake3` package, which vLLM already installs) is measured too: it was the other candidate.
    """
    hashers: dict[str, Callable[[], Any]] = {name: lambda name=name: checkpoints.new_hasher(name)
                                             for name in checkpoints.HASHES}
    try:
        import blake3

        hashers["blake3 (1 thread)"] = blake3.blake3
        hashers["blake3 (all cores)"] = lambda: blake3.blake3(max_threads=blake3.blake3.AUTO)
    except ImportError:
        pass
    data = memoryview(os.urandom(size))
    speeds = {}
    for name, make in hashers.items():
        hasher = make()
        started = time.perf_counter()
        for offset in range(0, size, checkpoints.CHUNK_BYTES):
            hasher.update(data[offset:offset + checkpoints.CHUNK_BYTES])
        speeds[name] = size / 1e9 / (time.perf_counter() - started)
    return speeds


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _setup(workdir: Path) -> tuple[LlamaForCausalLM, GenerationEngine, RunCheckpoints]:
    apply_cpu_env_defaults()
    shutil.rmtree(workdir, ignore_errors=True)
    seed_dir = workdir / "seed"
    model = _model(seed=0)
    model.save_pretrained(seed_dir)
    train_tokenizer(["0123456789 + - * = answer"], vocab_size=300).save_pretrained(seed_dir)
    engine = GenerationEngine(EngineConfig(dtype="float32", max_model_len=128))
    engine.load(Policy(0, str(seed_dir)))
    return model, engine, RunCheckpoints(workdir / "store", RUN_ID)


def _measure(model: LlamaForCausalLM, engine: GenerationEngine, store: RunCheckpoints, workdir: Path,
             reps: int) -> tuple[dict[str, list[dict]], dict]:
    """Rows of part timings per path (the warm-up dropped), and the manifest of the last policy written."""
    rows: dict[str, list[dict]] = {"semirl": [], "plain": [], "plain_fsync": []}
    manifest: dict = {}
    for rep in range(reps + 1):  # rep 0 is the warm-up
        paths = {
            "semirl": lambda rep=rep: _semirl_path(model, store, engine, version=rep + 1),
            "plain": lambda rep=rep: _plain_path(model, engine, workdir / "plain" / f"v{rep + 1}"),
            "plain_fsync": lambda rep=rep: _durable_plain_path(model, engine, workdir / "plain" / f"d{rep + 1}"),
        }
        names = list(paths)
        for name in names[rep % 3:] + names[:rep % 3]:  # each path goes first, second and third in turn
            _perturb(model, seed=rep)
            _settle(store, workdir / "plain")
            measured = paths[name]()
            if name == "semirl":
                manifest = verify(store.policy_dir(rep + 1))
            if rep > 0:
                rows[name].append(measured)
    return rows, manifest


def _ratios(medians: dict[str, dict[str, float]], minimums: dict[str, dict[str, float]]) -> dict[str, float]:
    """(a)/(b) from the summed part medians (the headline: a slow outlier in one part of a repetition does not move
    it), from the median totals and from the summed best times; and (a) over the fsynced baseline (c)."""
    return {
        "ratio_semirl_over_plain": medians["semirl"]["sum_of_medians_s"] / medians["plain"]["sum_of_medians_s"],
        "ratio_of_median_totals": medians["semirl"]["median_total_s"] / medians["plain"]["median_total_s"],
        "ratio_of_best_times": minimums["semirl"]["sum_s"] / minimums["plain"]["sum_s"],
        "ratio_semirl_over_plain_fsync":
            medians["semirl"]["sum_of_medians_s"] / medians["plain_fsync"]["sum_of_medians_s"],
        "added_s": medians["semirl"]["sum_of_medians_s"] - medians["plain"]["sum_of_medians_s"],
    }


def run(workdir: Path, reps: int) -> dict[str, Any]:
    model, engine, store = _setup(workdir)
    rows, manifest = _measure(model, engine, store, workdir, reps)
    engine.close()
    weight_bytes = sum(meta["size"] for meta in manifest["files"].values())
    medians = {name: _medians(path_rows) for name, path_rows in rows.items()}
    minimums = {name: _minimums(path_rows) for name, path_rows in rows.items()}
    gb = weight_bytes / 1e9
    return {
        "machine": f"{os.cpu_count()}-core CPU machine ({platform.machine()}), shared, noisy",
        "commit": _git_commit(),
        "model": {"parameters": sum(p.numel() for p in model.parameters()), "dtype": "float32",
                  "checkpoint_bytes": weight_bytes, "files": len(manifest["files"])},
        "manifest": {key: manifest.get(key) for key in ("algorithm", "segment_bytes")},
        "reps": reps,
        "median_s": medians,
        "best_s": minimums,
        **_ratios(medians, minimums),
        "throughput_gb_per_s": {
            f"{name}.{part}": gb / seconds
            for name, path_medians in medians.items() for part, seconds in path_medians.items() if part in rows[name][0]
        },
        "hash_gb_per_s_in_memory": _hash_speeds(),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--out", type=Path, default=Path("bench/results/commit_path.json"))
    parser.add_argument("--workdir", type=Path, default=Path(".semirl/bench-commit-path"))
    args = parser.parse_args()
    results = run(args.workdir, args.reps)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "rows"}, indent=2))
    print(f"ratio (semirl path / plain save + reload): {results['ratio_semirl_over_plain']:.2f}x "
          f"(summed part medians; of median totals: {results['ratio_of_median_totals']:.2f}x, "
          f"of best times: {results['ratio_of_best_times']:.2f}x); "
          f"over save + fsync + reload: {results['ratio_semirl_over_plain_fsync']:.2f}x")


if __name__ == "__main__":
    main()
