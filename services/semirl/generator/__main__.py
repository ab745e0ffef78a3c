"""`python -m semirl.generator`: the generator service process (vLLM).

CPU defaults (applied only when no GPU is present and only where the user has not set the variable):
- VLLM_ENABLE_V1_MULTIPROCESSING=0: the engine core runs in this process and the engine uses the in-process
  ("uni") executor. With the default (1), vLLM on CPU spawns an engine-core process *and* a worker process;
  on 2 shared cores that costs ~60 s of extra start-up (each re-imports torch + vLLM) and the busy-polling
  processes starve each other (the first generate took 30 s instead of 5 s).
- VLLM_CPU_OMP_THREADS_BIND=nobind: the default `auto` pins the worker to one core and reserves the other,
  which fights the other services sharing the machine.
- no VLLM_CPU_KVCACHE_SPACE: the engine sizes the KV cache to the model (engine.cpu_kv_cache_bytes); vLLM's own
  default sizes it from free RAM. Setting the variable (whole GiB) still wins.
- TOKENIZERS_PARALLELISM=false: no tokenizer thread pools next to gRPC threads.
- TORCH_COMPILE_DISABLE=1 when the engine is eager (apply_eager_cpu_defaults).

GPUs are detected without initializing CUDA. `torch.cuda.is_available()` normally calls cudaGetDeviceCount, which
initializes the CUDA driver in this process; vLLM's engine process forked after that dies with "Cannot
re-initialize CUDA in forked subprocess". vLLM sets PYTORCH_NVML_BASED_CUDA_CHECK=1 itself, but only when it is
imported, which is after this check. So this module sets it before anything can import torch: torch then counts the
visible GPUs through NVML (`torch.cuda.device_count()` via `_device_count_nvml`, CUDA_VISIBLE_DEVICES honoured)
and leaves CUDA uninitialized. The generator image also sets it, and VLLM_WORKER_MULTIPROC_METHOD=spawn, so even a
CUDA initialized by something else (NVML unavailable, MIG UUIDs) cannot poison vLLM's worker processes.

vLLM engine settings (SEMIRL_VLLM_*, set by the chart from generator.vllm and generator.gpus; a flag wins):
tensor_parallel_size, enforce_eager (default: true without a GPU, false with one), gpu_memory_utilization,
max_num_seqs, enable_prefix_caching and engine_args (JSON: more vllm.LLM keyword arguments, applied last). Unset
ones keep vLLM's defaults. They go into EngineConfig: enforce_eager as its field, the rest in `extra`.
"""

from __future__ import annotations

import os

# Before any import that could bring in torch (see the docstring): torch's CUDA check then never initializes CUDA.
NVML_CHECK_ENV = "PYTORCH_NVML_BASED_CUDA_CHECK"
os.environ.setdefault(NVML_CHECK_ENV, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from semirl.core.worker import add_worker_arguments, configure_logging, serve_until_stopped  # noqa: E402

if TYPE_CHECKING:
    from semirl.generator.engine import EngineConfig
    from semirl.generator.loop import GeneratorWorker

CPU_ENV_DEFAULTS = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "TOKENIZERS_PARALLELISM": "false",
}


def visible_gpus() -> int:
    """GPUs this process may use, counted without initializing CUDA (NVML under PYTORCH_NVML_BASED_CUDA_CHECK)."""
    os.environ.setdefault(NVML_CHECK_ENV, "1")
    try:
        import torch

        return max(0, torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no torch, or no usable driver: a CPU
        return 0


def apply_cpu_env_defaults() -> int:
    """Apply the CPU defaults when there is no GPU; returns the number of GPUs seen."""
    gpus = visible_gpus()
    if not gpus:
        for name, value in CPU_ENV_DEFAULTS.items():
            os.environ.setdefault(name, value)
    return gpus


def apply_eager_cpu_defaults(config: EngineConfig, gpus: int) -> None:
    """An eager engine on a CPU compiles nothing: TORCH_COMPILE_DISABLE=1 unless the user set it.

    With enforce_eager the model runs uncompiled, but vLLM 0.32 still wraps a few sampler helpers in torch.compile
    (`batched_count_greater_than` for logprobs, the top-k/top-p mask). Each compiles with inductor on its first
    call: 2.4 s of the run's first batch on a 2-core machine (that batch took 3.5 s instead of 1.1), again for the
    first top-p evaluation, and a C++ toolchain in the image. Eager, those ops measured as fast (0.9-1.1 s a batch
    of 32 prompts x 8 samples either way). Must be set before vLLM is imported: the decorators read it then."""
    if not gpus and config.enforce_eager:
        os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")


def _bool(text: str) -> bool:
    if text.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if text.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _env(name: str) -> str | None:
    """A variable's value as a flag default (argparse converts a string default with the flag's type)."""
    return os.environ.get(name, "").strip() or None


def vllm_options(args: argparse.Namespace) -> dict[str, Any]:
    """The vllm.LLM keyword arguments that were set (EngineConfig.extra; engine_args last, so they win); unset ones
    keep vLLM's defaults."""
    options = {
        "tensor_parallel_size": args.tensor_parallel_size,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "max_num_seqs": args.max_num_seqs,
        "enable_prefix_caching": args.enable_prefix_caching,
    }
    return {**{name: value for name, value in options.items() if value is not None}, **args.engine_args}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="semirl.generator", description="semirl generator (vLLM)")
    add_worker_arguments(parser, grpc_port=50051)
    parser.add_argument("--generator-id",
                        default=os.environ.get("SEMIRL_GENERATOR_ID") or f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--model", default=os.environ.get("SEMIRL_GENERATOR_MODEL"),
                        help="optional: load this HF directory as version 0 when no run is active")
    parser.add_argument("--dtype", default=os.environ.get("SEMIRL_GENERATOR_DTYPE", "float32"),
                        help="dtype when no run is active (a run's spec.model.dtype wins)")
    parser.add_argument("--max-model-len", type=int, default=int(os.environ.get("SEMIRL_MAX_MODEL_LEN", "512")))
    parser.add_argument("--batch-size", type=int, default=int(os.environ.get("SEMIRL_GENERATOR_BATCH", "64")))
    parser.add_argument("--seed", type=int, default=0)
    vllm = parser.add_argument_group("vLLM engine (unset: vLLM's default)")
    vllm.add_argument("--tensor-parallel-size", type=int, default=_env("SEMIRL_VLLM_TENSOR_PARALLEL_SIZE"),
                      help="GPUs of one engine (the chart: the pod's GPUs)")
    vllm.add_argument("--enforce-eager", type=_bool, default=_env("SEMIRL_VLLM_ENFORCE_EAGER"),
                      help="true = no CUDA graphs; unset = true without a GPU, false with one")
    vllm.add_argument("--gpu-memory-utilization", type=float, default=_env("SEMIRL_VLLM_GPU_MEMORY_UTILIZATION"))
    vllm.add_argument("--max-num-seqs", type=int, default=_env("SEMIRL_VLLM_MAX_NUM_SEQS"))
    vllm.add_argument("--enable-prefix-caching", type=_bool, default=_env("SEMIRL_VLLM_ENABLE_PREFIX_CACHING"))
    vllm.add_argument("--engine-args", type=json.loads, default=_env("SEMIRL_VLLM_ENGINE_ARGS") or "{}",
                      help="JSON object: more vllm.LLM keyword arguments")
    args = parser.parse_args(argv)
    if not isinstance(args.engine_args, dict):
        parser.error("--engine-args (SEMIRL_VLLM_ENGINE_ARGS) must be a JSON object")
    return args


def engine_config(args: argparse.Namespace, gpus: int) -> EngineConfig:
    from semirl.generator.engine import EngineConfig

    enforce_eager = args.enforce_eager if args.enforce_eager is not None else gpus == 0
    return EngineConfig(dtype=args.dtype, max_model_len=args.max_model_len, enforce_eager=enforce_eager,
                        seed=args.seed, extra=vllm_options(args))


def build_generator(redis_url: str, grpc_port: int, generator_id: str, *, advertise_host: str = "127.0.0.1",
                    model: str | None = None, engine_config: EngineConfig | None = None,
                    batch_size: int = 64) -> GeneratorWorker:
    """The generator worker with its servicer, around one engine they share (generator/shared_engine.py).

    Imported here, not at the top: the CPU defaults above must be in the environment before vLLM is imported."""
    from semirl.core.redis_client import connect
    from semirl.generator.engine import EngineConfig, GenerationEngine
    from semirl.generator.grpc_api import GeneratorServicer
    from semirl.generator.loop import GeneratorWorker
    from semirl.generator.metrics import GeneratorMetrics
    from semirl.generator.policies import RunPolicies
    from semirl.generator.shared_engine import SharedEngine
    from semirl.proto import generator_pb2_grpc

    client = connect(redis_url)
    config = engine_config or EngineConfig()
    engine = SharedEngine(GenerationEngine(config), config, RunPolicies(client), GeneratorMetrics())
    worker = GeneratorWorker(client, generator_id, engine, grpc_port=grpc_port, advertise_host=advertise_host,
                             model=model, batch_size=batch_size)
    worker.server.add(generator_pb2_grpc.add_GeneratorServiceServicer_to_server,
                      GeneratorServicer(engine, generator_id))
    return worker


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, "generator")
    gpus = apply_cpu_env_defaults()
    config = engine_config(args, gpus)
    apply_eager_cpu_defaults(config, gpus)
    worker = build_generator(args.redis_url, args.grpc_port, args.generator_id, advertise_host=args.advertise_host,
                             model=args.model, batch_size=args.batch_size, engine_config=config)
    return serve_until_stopped(worker, args.metrics_port)


if __name__ == "__main__":
    sys.exit(main())
