"""Benchmark: the weight-sync pause, in memory (`broadcast`) against through the store (`storage`), with raw baselines.

A random Llama of ~1.1B parameters with TinyLlama's shape (22 layers, hidden 2048, GQA 32/4 heads, untied head),
held in bf16 as the trainer holds it (2.2 GB a sync), and G real generator services (`python -m semirl.generator`,
vLLM engines in float32, each its own process, on this machine's loopback) reached over gRPC as the trainer
reaches them. Each repetition perturbs the weights first and measures, from "trainer step done" to "all G
generators serving the version":

- broadcast (G = 1, 2): `WeightSender.send`, semirl's trainer-side code (bucket plan, per-bucket gather hook, pack,
  gloo broadcast, one ReceiveWeights RPC per member whose handler runs vLLM's four-phase weight-transfer API with
  the `semirl` backend);
- storage (G = 1, 2): the trainer's export (`staged_directory` around `save_pretrained`: writeback, hashes, fsync,
  manifest, rename), then one `Reload` RPC per generator at once (size check and vLLM `reload_weights`);

and two raw baselines in the same run, over the same bytes:

- raw_broadcast: a bare `ProcessGroupGloo` broadcast of the same buckets to one other process (preallocated
  buffers, nothing else);
- raw_load_weights: an in-process vLLM engine's `load_weights` of the same tensors (vLLM's layerwise reload, as
  `reload_weights` does), timed inside the worker, in a process with the generators' settings.

The trainer's ZeRO-3 gathers are not in it (a single trainer rank holds the whole model; the gathers are NVLink
all-gathers on a cluster). Reported: medians and bests, broadcast / (raw_broadcast + raw_load_weights) (the goal
is <= 1.3), and broadcast / storage.

    python -m bench.weight_transfer [--reps 3] [--layers 22] [--out bench/results/weight_transfer.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from semirl.core.checkpoint_store import RunCheckpoints, staged_directory
from semirl.core.grpc_server import channel, check_health
from semirl.core.redis_server import free_port, start_redis
from semirl.core.weight_transfer import DEFAULT_BUCKET_BYTES, bucket_bytes_of
from semirl.proto import controller_pb2, generator_pb2, generator_pb2_grpc, types_pb2
from semirl.tinymodel.tokenizer import train_tokenizer
from semirl.trainer.checkpoint_writer import copy_model_side_files
from semirl.trainer.engine import TrainingEngine
from semirl.trainer.weight_sender import WeightSender

RUN_ID = "bench-weight-transfer"
CPU_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "WARNING", "VLLM_CPU_KVCACHE_SPACE": "1"}


def _model(layers: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=layers,
        num_attention_heads=32, num_key_value_heads=4, head_dim=64, max_position_embeddings=256,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0, torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(torch.bfloat16).eval()


class _PolicyHolder:
    """The trainer engine's weight methods (its single-rank path) over a plain module: the real plan and send."""

    policy_plan = TrainingEngine.policy_plan
    send_policy = TrainingEngine.send_policy

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.zero3 = False
        self.ranks = SimpleNamespace(is_driver=True)


class _Driver:
    """What WeightSender asks of the trainer's RankDriver, for one rank (RankWorker's send_policy)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.worker = SimpleNamespace(engine=_PolicyHolder(module))

    def send_policy(self, step: int, bucket_bytes: int, send: Any) -> None:  # noqa: ANN401
        engine = self.worker.engine
        engine.send_policy(engine.policy_plan(bucket_bytes), send)


def _perturb(model: torch.nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param), alpha=1e-3)


def _stub(address: str) -> tuple[Any, Any]:
    chan = channel(address)
    return chan, generator_pb2_grpc.GeneratorServiceStub(chan)


def _start_generators(count: int, redis_url: str, logs: Path) -> list[tuple[str, str, subprocess.Popen]]:
    started = []
    for index in range(count):
        port = free_port()
        name = f"bench-gen-{index}"
        log = (logs / f"{name}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "semirl.generator", "--generator-id", name, "--grpc-port", str(port),
             "--redis-url", redis_url, "--dtype", "float32", "--max-model-len", "128", "--log-level", "INFO"],
            env={**os.environ, **CPU_ENV}, stdout=log, stderr=subprocess.STDOUT)
        started.append((name, f"127.0.0.1:{port}", process))
    for name, address, process in started:
        deadline = time.monotonic() + 300
        while not check_health(address, timeout=1.0):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {logs / (name + '.log')}")
            time.sleep(0.5)
    return started


def _reload(address: str, version: int, path: Path) -> float:
    chan, stub = _stub(address)
    try:
        started = time.perf_counter()
        stub.Reload(generator_pb2.ReloadRequest(run_id=RUN_ID, policy=types_pb2.PolicyRef(version=version,
                                                                                           path=str(path))),
                    timeout=600)
        return time.perf_counter() - started
    finally:
        chan.close()


def _storage(model: torch.nn.Module, store: RunCheckpoints, members: list[tuple[str, str]], version: int) -> dict:
    started = time.perf_counter()
    with staged_directory(store.policy_dir(version), {"run_id": RUN_ID, "version": version}) as staging:
        model.save_pretrained(staging, state_dict=model.state_dict())
        copy_model_side_files(store.run_dir.parent / "seed", staging)  # the tokenizer: an in-place reload
    written = time.perf_counter()
    with ThreadPoolExecutor(len(members)) as pool:
        loads = list(pool.map(lambda m: _reload(m[1], version, store.policy_dir(version)), members))
    done = time.perf_counter()
    store.retain(keep=1, protect=set())
    return {"pause_s": done - started, "export_s": written - started, "slowest_reload_s": max(loads)}


def _broadcast(sender: WeightSender, members: list[tuple[str, str]], version: int) -> dict:
    plan = controller_pb2.WeightSyncPlan(transport="broadcast", timeout_s=600, members=[
        controller_pb2.SyncMember(generator_id=name, address=address) for name, address in members])
    started = time.perf_counter()
    result = sender.send(RUN_ID, version, plan)
    pause = time.perf_counter() - started
    if len(result.delivered) != len(members):
        raise RuntimeError(f"broadcast of v{version} failed: {result.outcomes}")
    return {"pause_s": pause, "slowest_member_s": max(o.seconds for o in result.outcomes)}


def _raw_receiver(port: int, sizes: list[int], ready: Any) -> None:  # noqa: ANN401
    from datetime import timedelta

    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", port, 2, is_master=False, timeout=timedelta(seconds=120))
    group = dist.ProcessGroupGloo(store, 1, 2, timedelta(seconds=120))
    buffers = [torch.empty(size, dtype=torch.uint8) for size in sizes]
    ready.put(True)
    options = dist.BroadcastOptions()
    options.rootRank = 0
    while True:
        for buffer in buffers:
            group.broadcast([buffer], options).wait()
        ready.put(True)


def _raw_broadcast(model: torch.nn.Module, reps: int) -> list[float]:
    """A bare gloo broadcast of the same buckets (already packed) to one other process."""
    from datetime import timedelta

    import torch.distributed as dist

    from semirl.core.weight_transfer import pack

    holder = _PolicyHolder(model)
    buckets = holder.policy_plan(DEFAULT_BUCKET_BYTES)
    params = dict(model.named_parameters())
    packed = [pack(b, {s.name: params[s.name] for s in b}) for b in buckets]
    port = free_port()
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    receiver = context.Process(target=_raw_receiver, args=(port, [bucket_bytes_of(b) for b in buckets], ready),
                               daemon=True)
    receiver.start()
    store = dist.TCPStore("127.0.0.1", port, 2, is_master=True, timeout=timedelta(seconds=120))
    group = dist.ProcessGroupGloo(store, 0, 2, timedelta(seconds=120))
    ready.get(timeout=120)
    options = dist.BroadcastOptions()
    options.rootRank = 0
    seconds = []
    for _ in range(reps + 1):
        started = time.perf_counter()
        for flat in packed:
            group.broadcast([flat], options).wait()
        ready.get(timeout=120)
        seconds.append(time.perf_counter() - started)
    receiver.kill()
    return seconds[1:]


def _load_weights_in_worker(worker: Any, shapes: list[tuple[str, list[int]]], seed: int) -> float:  # noqa: ANN401
    from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload

    generator = torch.Generator().manual_seed(seed)
    tensors = [(name, torch.randn(shape, generator=generator).to(torch.bfloat16)) for name, shape in shapes]
    model = worker.model_runner.get_model()
    started = time.perf_counter()
    initialize_layerwise_reload(model)
    model.load_weights(tensors)
    finalize_layerwise_reload(model, worker.model_runner.model_config)
    return time.perf_counter() - started


def _raw_load_weights(seed_dir: Path, reps: int) -> list[float]:
    """An in-process vLLM engine's load_weights of tensors of the same names, shapes and dtype (made in the worker,
    not timed), in a process of its own with the generators' settings (one compute thread)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.weight_transfer", "--raw-load-weights", str(seed_dir), "--reps", str(reps)],
        env={**os.environ, **CPU_ENV}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _raw_load_weights_here(seed_dir: Path, reps: int) -> list[float]:
    from semirl.generator.engine import EngineConfig, GenerationEngine, Policy

    engine = GenerationEngine(EngineConfig(dtype="float32", max_model_len=128))
    engine.load(Policy(0, str(seed_dir)))
    model = LlamaForCausalLM.from_pretrained(seed_dir, torch_dtype=torch.bfloat16)
    shapes = [(name, list(param.shape)) for name, param in model.named_parameters()]
    del model
    seconds = [float(engine.llm.collective_rpc(_load_weights_in_worker, args=(shapes, rep))[0])
               for rep in range(reps + 1)]
    engine.close()
    return seconds[1:]


def _summary(values: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(values), "best_s": min(values), "runs": len(values)}


def run(workdir: Path, reps: int, layers: int) -> dict[str, Any]:
    model = _model(layers)
    params = sum(p.numel() for p in model.parameters())
    bytes_per_sync = sum(bucket_bytes_of(b) for b in _PolicyHolder(model).policy_plan(DEFAULT_BUCKET_BYTES))
    seed_dir = workdir / "store" / "seed"
    model.save_pretrained(seed_dir)
    train_tokenizer(["0123456789 + - * = answer"], vocab_size=300).save_pretrained(seed_dir)
    store = RunCheckpoints(workdir / "store", RUN_ID, subdir=RUN_ID)
    redis = start_redis(workdir / "redis")
    rows: dict[str, list[float]] = {}
    try:
        generators = _start_generators(2, redis.url, workdir)
        members = [(name, address) for name, address, _ in generators]
        for _, address in members:
            _reload(address, 0, seed_dir)  # build each engine on the seed
        sender = WeightSender(_Driver(model), advertise_host="127.0.0.1", port=free_port())
        version = 0
        for count in (1, 2):
            for rep in range(reps + 1):  # the first of each is a warm-up
                for transport in ("broadcast", "storage"):
                    version += 1
                    _perturb(model, version)
                    os.sync()
                    row = (_broadcast(sender, members[:count], version) if transport == "broadcast"
                           else _storage(model, store, members[:count], version))
                    if rep:
                        rows.setdefault(f"{transport}_g{count}", []).append(row["pause_s"])
                        for key, value in row.items():
                            if key != "pause_s":
                                rows.setdefault(f"{transport}_g{count}_{key}", []).append(value)
        for _, _, process in generators:
            process.terminate()
        for _, _, process in generators:
            process.wait(60)
    finally:
        redis.stop()
    rows["raw_broadcast"] = _raw_broadcast(model, reps)
    rows["raw_load_weights"] = _raw_load_weights(seed_dir, reps)
    summary = {name: _summary(values) for name, values in rows.items()}
    raw = summary["raw_broadcast"]["median_s"] + summary["raw_load_weights"]["median_s"]
    raw_best = summary["raw_broadcast"]["best_s"] + summary["raw_load_weights"]["best_s"]
    return {
        "machine": f"{os.cpu_count()}-core CPU machine ({platform.machine()}), shared, noisy; no GPU",
        "model": f"random Llama, {layers} layers, hidden 2048, {params / 1e9:.2f}B parameters, bf16 on the wire",
        "bytes_per_sync": bytes_per_sync,
        "bucket_bytes": DEFAULT_BUCKET_BYTES,
        "repetitions": reps,
        "results": summary,
        "broadcast_g1_over_raw": summary["broadcast_g1"]["median_s"] / raw,
        "broadcast_g1_over_raw_best": summary["broadcast_g1"]["best_s"] / raw_best,
        "broadcast_over_storage_g1": summary["broadcast_g1"]["median_s"] / summary["storage_g1"]["median_s"],
        "broadcast_over_storage_g2": summary["broadcast_g2"]["median_s"] / summary["storage_g2"]["median_s"],
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/weight_transfer.json"))
    parser.add_argument("--raw-load-weights", type=Path, default=None, help=argparse.SUPPRESS)  # the subprocess
    args = parser.parse_args()
    if args.raw_load_weights is not None:
        print(json.dumps(_raw_load_weights_here(args.raw_load_weights, args.reps)))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        results = run(Path(workdir), args.reps, args.layers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
