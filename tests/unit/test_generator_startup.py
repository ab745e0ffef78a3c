"""The generator's start-up never initializes CUDA before vLLM forks (issue: "Cannot re-initialize CUDA in forked
subprocess"), and its vLLM settings reach EngineConfig.

Each check runs `semirl.generator.__main__` in a fresh interpreter, because what matters is the order of imports and
environment changes in a new process. torch here is a CPU build, so the script gives it what a CUDA build has: a
`torch._C._cuda_getDeviceCount` (the CUDA runtime call that initializes the driver and poisons fork) that records
every call, and NVML reporting two GPUs. The detection must count the two GPUs through NVML and never call it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import json, os, sys

    seen = {}

    def audit(event, args):
        # the first import of torch: was the NVML guard already in the environment?
        if event == "import" and args[0] == "torch" and "guard_at_torch_import" not in seen:
            seen["guard_at_torch_import"] = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")

    sys.addaudithook(audit)
    import semirl.generator.__main__ as entry  # noqa: E402

    import torch  # noqa: E402

    runtime_calls = []

    def cuda_get_device_count():  # what a CUDA build's check calls when NVML is not used: initializes CUDA
        runtime_calls.append(1)
        return 2

    if FAKE_GPUS:
        torch._C._cuda_getDeviceCount = cuda_get_device_count
        torch.cuda._raw_device_count_nvml = lambda: 2
    gpus = entry.apply_cpu_env_defaults()
    config = entry.engine_config(entry.parse_args(ARGS), gpus)
    entry.apply_eager_cpu_defaults(config, gpus)
    print(json.dumps({
        "compile_disabled": os.environ.get("TORCH_COMPILE_DISABLE"),
        **seen,
        "gpus": gpus,
        "runtime_calls": len(runtime_calls),
        "cuda_initialized": torch.cuda.is_initialized(),
        "cpu_defaults": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING"),
        "enforce_eager": config.enforce_eager,
        "extra": config.extra,
    }))
    """
)

VLLM_ENV = ("SEMIRL_VLLM_TENSOR_PARALLEL_SIZE", "SEMIRL_VLLM_ENFORCE_EAGER", "SEMIRL_VLLM_GPU_MEMORY_UTILIZATION",
            "SEMIRL_VLLM_MAX_NUM_SEQS", "SEMIRL_VLLM_ENABLE_PREFIX_CACHING", "SEMIRL_VLLM_ENGINE_ARGS")


def run_probe(fake_gpus: bool, args: tuple[str, ...] = (), **env: str) -> dict:
    base = {k: v for k, v in os.environ.items()
            if k not in VLLM_ENV and k not in ("PYTORCH_NVML_BASED_CUDA_CHECK", "VLLM_ENABLE_V1_MULTIPROCESSING",
                                                "CUDA_VISIBLE_DEVICES", "TORCH_COMPILE_DISABLE")}
    probe = PROBE.replace("FAKE_GPUS", str(fake_gpus)).replace("ARGS", repr(list(args)))
    proc = subprocess.run([sys.executable, "-c", probe], env={**base, **env},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def with_gpus() -> dict:
    return run_probe(True)


def test_the_nvml_guard_is_set_before_torch_is_imported(with_gpus: dict) -> None:
    assert with_gpus["guard_at_torch_import"] == "1"


def test_gpus_are_counted_without_initializing_cuda(with_gpus: dict) -> None:
    assert with_gpus["gpus"] == 2
    assert with_gpus["runtime_calls"] == 0, "torch.cuda's check called cudaGetDeviceCount: CUDA initialized"
    assert with_gpus["cuda_initialized"] is False


def test_gpu_defaults(with_gpus: dict) -> None:
    assert with_gpus["cpu_defaults"] is None          # the CPU-only vLLM settings stay off on a GPU
    assert with_gpus["enforce_eager"] is False        # CUDA graphs on a GPU unless asked otherwise
    assert with_gpus["extra"] == {}                   # nothing set: vLLM's own defaults
    assert with_gpus["compile_disabled"] is None      # vLLM compiles (and captures CUDA graphs) on a GPU


def test_cpu_defaults() -> None:
    result = run_probe(False)
    assert result["gpus"] == 0 and result["cuda_initialized"] is False
    assert result["cpu_defaults"] == "0"
    assert result["enforce_eager"] is True
    assert result["compile_disabled"] == "1"  # an eager CPU engine: no inductor compile on the first batch


def test_a_cpu_engine_that_asks_for_compilation_or_a_users_setting_keeps_torch_compile() -> None:
    assert run_probe(False, ("--enforce-eager", "false"))["compile_disabled"] is None
    assert run_probe(False, TORCH_COMPILE_DISABLE="0")["compile_disabled"] == "0"


def test_vllm_settings_from_the_chart_reach_the_engine_config() -> None:
    result = run_probe(True, SEMIRL_VLLM_TENSOR_PARALLEL_SIZE="2", SEMIRL_VLLM_ENFORCE_EAGER="true",
                       SEMIRL_VLLM_GPU_MEMORY_UTILIZATION="0.85", SEMIRL_VLLM_MAX_NUM_SEQS="512",
                       SEMIRL_VLLM_ENABLE_PREFIX_CACHING="false",
                       SEMIRL_VLLM_ENGINE_ARGS='{"kv_cache_dtype": "fp8", "max_num_seqs": 256}')
    assert result["enforce_eager"] is True
    assert result["extra"] == {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.85, "max_num_seqs": 256,
                               "enable_prefix_caching": False, "kv_cache_dtype": "fp8"}  # engine args win
