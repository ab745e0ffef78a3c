"""`python -m semirl.generator`: the generator service process (vLLM).

CPU defaults (applied only when no GPU is present and only where the user has not set the variable):
- VLLM_ENABLE_V1_MULTIPROCESSING=0: the engine core runs in this process and the engine uses the in-process
  ("uni") executor. With the default (1), vLLM on CPU spawns an engine-core process *and* a worker process;
  on 2 shared cores that costs ~60 s of extra start-up (each re-imports torch + vLLM) and the busy-polling
  processes starve each other (the first generate took 30 s instead of 5 s).
- VLLM_CPU_OMP_THREADS_BIND=nobind: the default `auto` pins the worker to one core and reserves the other,
  which fights the other services sharing the machine.
- VLLM_CPU_KVCACHE_SPACE=1 (GiB): the default sizes the KV cache from free RAM.
- TOKENIZERS_PARALLELISM=false: no tokenizer thread pools next to gRPC threads.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from semirl.core.lifecycle import add_worker_arguments, configure_logging, serve_until_stopped

CPU_ENV_DEFAULTS = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_cpu_env_defaults() -> None:
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_gpu = False
    if not has_gpu:
        for name, value in CPU_ENV_DEFAULTS.items():
            os.environ.setdefault(name, value)


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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, "generator")
    apply_cpu_env_defaults()
    from semirl.generator.engine import EngineConfig
    from semirl.generator.service import GeneratorService

    service = GeneratorService(
        args.redis_url, args.grpc_port, args.generator_id,
        advertise_host=args.advertise_host, model=args.model, batch_size=args.batch_size,
        engine_config=EngineConfig(dtype=args.dtype, max_model_len=args.max_model_len, seed=args.seed),
    )

    return serve_until_stopped(service, args.metrics_port, "batch")


if __name__ == "__main__":
    sys.exit(main())
