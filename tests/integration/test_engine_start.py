"""A real vLLM engine (CPU) built the way the generator builds it at start-up: its KV cache sized to the model
(cpu_kv_cache_bytes, not VLLM_CPU_KVCACHE_SPACE's whole GiB), room for max_num_seqs full-context sequences, the
import heap frozen before the build, and it generates. Runs in a fresh interpreter, as the generator process does
(the freeze is per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from semirl.generator.engine import EngineConfig, cpu_kv_cache_bytes

MAX_NUM_SEQS = 8
MAX_MODEL_LEN = 128

PROBE = textwrap.dedent(
    """
    import gc, json, sys
    from semirl.generator.engine import EngineConfig, GenerationEngine, Policy, Sampling
    from semirl.core.wire import PromptFormat
    from semirl.generator.engine import Prompt

    engine = GenerationEngine(EngineConfig(max_model_len=MAX_MODEL_LEN, extra={"max_num_seqs": MAX_NUM_SEQS}))
    engine.load(Policy(0, sys.argv[1]))
    config = engine.llm.llm_engine.vllm_config.cache_config
    out = engine.generate([Prompt("What is 2 + 3?", PromptFormat.CHAT)] * MAX_NUM_SEQS, Sampling(n=2, max_tokens=8))
    print(json.dumps({"kv_cache_memory_bytes": config.kv_cache_memory_bytes,
                      "token_slots": config.num_gpu_blocks * config.block_size,
                      "frozen": gc.get_freeze_count(), "samples": sum(len(s) for _, s in out),
                      "tokens": [len(s.token_ids) for _, samples in out for s in samples]}))
    """
).replace("MAX_NUM_SEQS", str(MAX_NUM_SEQS)).replace("MAX_MODEL_LEN", str(MAX_MODEL_LEN))


def test_the_cpu_engine_sizes_its_kv_cache_to_the_model_and_generates(tiny_setup) -> None:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}
    env.update(VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_OMP_THREADS_BIND="nobind", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tiny_setup.model_dir)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    built = json.loads(proc.stdout.strip().splitlines()[-1])

    expected = cpu_kv_cache_bytes(str(tiny_setup.model_dir),
                                  EngineConfig(max_model_len=MAX_MODEL_LEN, extra={"max_num_seqs": MAX_NUM_SEQS}))
    assert built["kv_cache_memory_bytes"] == expected < 1 << 30
    assert built["token_slots"] >= MAX_NUM_SEQS * MAX_MODEL_LEN
    assert built["frozen"] > 100_000  # torch's and vLLM's import heap, frozen before the build
    assert built["samples"] == 2 * MAX_NUM_SEQS
    assert all(0 < n <= 8 for n in built["tokens"])
