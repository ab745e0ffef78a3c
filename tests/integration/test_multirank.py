"""A 2-rank DeepSpeed step equals the 1-rank step on the same batch (DPO and GRPO), for ZeRO stages 0-3 (gloo, CPU).

Real processes with real DeepSpeed: `rank_step_worker.py` runs as two ranks (launched with the trainer's own
`rank_environment`) and as one; rank 0 of each writes the updated weights of every stage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from semirl.core.redis_server import free_port
from semirl.trainer.launcher import rank_environment
from semirl.trainer.topology import TrainerTopology

WORKER = Path(__file__).with_name("rank_step_worker.py")
# fp32 on CPU; the 2-rank gradient is a sum in another order (and ZeRO partitions it): equal up to rounding.
ATOL = 2e-6


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
        pad_token_id=0, tie_word_embeddings=False,
    )
    path = tmp_path_factory.mktemp("rank-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def _run(world: int, model: Path, out: Path, algorithm: str) -> None:
    topology = TrainerTopology(cpu_ranks_per_node=world, master_port=free_port())
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(model), str(out), algorithm],
                              env={**env, **rank_environment(topology, rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for rank in range(world)]
    for proc in procs:
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output.decode(errors="replace")[-4000:]


@pytest.mark.parametrize("algorithm", ["dpo", "grpo"])
def test_two_ranks_equal_one_rank_for_every_zero_stage(model_dir: Path, tmp_path: Path, algorithm: str) -> None:
    _run(2, model_dir, tmp_path, algorithm)
    _run(1, model_dir, tmp_path, algorithm)
    seed = load_file(str(next(model_dir.glob("*.safetensors"))))
    for stage in (0, 1, 2, 3):
        one = load_file(str(tmp_path / f"{algorithm}-stage{stage}-world1.safetensors"))
        two = load_file(str(tmp_path / f"{algorithm}-stage{stage}-world2.safetensors"))
        assert one.keys() == two.keys()
        assert torch.allclose(one.pop("__loss__"), two.pop("__loss__"), atol=1e-6), stage
        moved = max(float((one[k] - seed[k].float()).abs().max()) for k in one if k in seed)
        assert moved > 1e-4, f"stage {stage}: the step did not move the weights"
        for key in one:
            assert torch.allclose(one[key], two[key], atol=ATOL, rtol=0), (stage, key)
