"""One trainer rank for test_multirank.py: one DPO step per ZeRO stage on a fixed batch, weights to a file.

Run as `python rank_step_worker.py MODEL_DIR OUT_DIR` with torchrun's variables (RANK, WORLD_SIZE, ...) set; every
rank builds the same pairs, `TrainingEngine` shards them; rank 0 writes the updated weights of each stage.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from semirl.spec import RunSpec
from semirl.trainer.distributed import join_trainer_group
from semirl.trainer.engine import TrainingEngine
from semirl.trainer.objectives import StepExamples
from semirl.trainer.pairs import Pair

VOCAB = 100
STAGES = (0, 1, 2, 3)


def pairs(n: int) -> list[Pair]:
    gen = torch.Generator().manual_seed(7)
    out = []
    for i in range(n):
        def draw(length: int) -> tuple[int, ...]:
            return tuple(int(t) for t in torch.randint(3, VOCAB, (length,), generator=gen))

        out.append(Pair(f"t1-{i}", 0, draw(3 + i % 3), draw(4 + i % 4), draw(2 + i % 5), 0, 1))
    return out


def spec(model: str, stage: int) -> RunSpec:
    return RunSpec.model_validate({
        "name": "ranks", "model": {"path": model}, "data": {"train": {"path": "unused.jsonl"}},
        "train": {"steps": 2, "batch_prompts": 8, "micro_batch_pairs": 2, "seed": 0},
        # a large Adam eps makes the update ~ lr·gradient, so equal weights mean equal gradients
        "optim": {"lr": 1e-2, "adam_eps": 1.0, "grad_clip": 100.0},
        "dpo": {"beta": 0.1, "loss_normalizer": "prompts"}, "deepspeed": {"zero_stage": stage},
    })


def main(model: str, out: str) -> None:
    ranks = join_trainer_group()
    batch = StepExamples(examples=pairs(5), prompts=8)
    for stage in STAGES:
        engine = TrainingEngine(spec(model, stage), ranks=ranks)
        metrics = engine.train_step(batch)
        state = engine.policy_state_dict()
        if ranks.is_driver:
            assert state is not None
            tensors = {k: v.float().contiguous().clone() for k, v in state.items()}
            tensors["__loss__"] = torch.tensor([metrics["loss"]])
            save_file(tensors, str(Path(out) / f"stage{stage}-world{ranks.world_size}.safetensors"))
        engine.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
