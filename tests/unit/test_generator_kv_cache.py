"""The CPU KV cache is sized to the model (generator/engine.py, cpu_kv_cache_bytes): enough for max_num_seqs
sequences of the full context, within 64 MiB..1 GiB, and the upper bound when the config cannot be read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semirl.generator.engine import CPU_KV_CACHE_BOUNDS, EngineConfig, cpu_kv_cache_bytes

LOW, HIGH = CPU_KV_CACHE_BOUNDS
MiB = 1 << 20


def model_dir(tmp_path: Path, **config: object) -> str:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def test_a_mid_sized_model_gets_exactly_what_its_sequences_need(tmp_path: Path) -> None:
    # 4 layers x 8 KV heads x 64 dims, fp32: 2 x 4 x 8 x 64 x 4 = 16 KiB a token; 512 tokens x 32 sequences
    path = model_dir(tmp_path, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8, hidden_size=512,
                     max_position_embeddings=4096)
    config = EngineConfig(dtype="float32", max_model_len=512, extra={"max_num_seqs": 32})
    assert cpu_kv_cache_bytes(path, config) == 16 * 1024 * 512 * 32 == 256 * MiB


def test_grouped_query_heads_and_bf16_shrink_it(tmp_path: Path) -> None:
    path = model_dir(tmp_path, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, head_dim=64,
                     hidden_size=512)
    config = EngineConfig(dtype="bfloat16", max_model_len=1024, extra={"max_num_seqs": 64})
    assert cpu_kv_cache_bytes(path, config) == 2 * 4 * 2 * 64 * 2 * 1024 * 64  # 128 MiB


def test_the_context_is_capped_at_what_the_model_supports(tmp_path: Path) -> None:
    path = model_dir(tmp_path, num_hidden_layers=8, num_attention_heads=4, hidden_size=256,
                     max_position_embeddings=256)
    small = cpu_kv_cache_bytes(path, EngineConfig(max_model_len=256, extra={"max_num_seqs": 256}))
    asked_more = cpu_kv_cache_bytes(path, EngineConfig(max_model_len=8192, extra={"max_num_seqs": 256}))
    assert small == asked_more == 2 * 8 * 4 * 64 * 4 * 256 * 256


def test_an_8b_model_is_held_to_the_upper_bound_and_a_toy_to_the_lower(tmp_path: Path) -> None:
    llama_8b = model_dir(tmp_path, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         hidden_size=4096, max_position_embeddings=131072)
    assert cpu_kv_cache_bytes(llama_8b, EngineConfig(dtype="bfloat16", max_model_len=4096)) == HIGH
    toy = tmp_path / "toy"
    toy.mkdir()
    tiny = model_dir(toy, num_hidden_layers=1, num_attention_heads=1, hidden_size=16)
    assert cpu_kv_cache_bytes(tiny, EngineConfig(max_model_len=64, extra={"max_num_seqs": 4})) == LOW


def test_a_multimodal_config_is_read_from_its_text_config(tmp_path: Path) -> None:
    path = model_dir(tmp_path, text_config={"num_hidden_layers": 4, "num_attention_heads": 8, "hidden_size": 512})
    config = EngineConfig(dtype="float32", max_model_len=512, extra={"max_num_seqs": 32})
    assert cpu_kv_cache_bytes(path, config) == 256 * MiB


@pytest.mark.parametrize("config", [None, {"hidden_size": 128}, {"num_hidden_layers": 2, "num_attention_heads": 0,
                                                                  "hidden_size": 128}])
def test_an_unreadable_or_incomplete_config_gets_the_upper_bound(tmp_path: Path, config: dict | None) -> None:
    if config is not None:
        model_dir(tmp_path, **config)
    assert cpu_kv_cache_bytes(str(tmp_path), EngineConfig()) == HIGH
