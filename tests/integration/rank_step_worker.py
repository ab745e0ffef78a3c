"""One trainer rank for test_multirank.py: one step per ZeRO stage on a fixed batch, weights to a file.

Run as `python rank_step_worker.py MODEL_DIR OUT_DIR [dpo|grpo]` with torchrun's variables (RANK, WORLD_SIZE, ...)
set; every rank builds the same examples (DPO pairs, or off-policy GRPO samples with behaviour logprobs and a KL
term), `TrainingEngine` shards them; rank 0 writes the updated weights of each stage.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from semirl.spec import RunSpec
from semirl.trainer.distributed import join_trainer_group
from semirl.trainer.engine import TrainingEngine
from semirl.trainer.groups import GroupSample
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


def group_samples(n: int) -> list[GroupSample]:
    gen = torch.Generator().manual_seed(11)
    out = []
    for i in range(n):
        prompt = tuple(int(t) for t in torch.randint(3, VOCAB, (3 + i % 3,), generator=gen))
        response = tuple(int(t) for t in torch.randint(3, VOCAB, (2 + i % 4,), generator=gen))
        behaviour = tuple(float(v) for v in -4.6 + 0.3 * torch.randn(len(response), generator=gen))
        out.append(GroupSample(f"t1-{i // 3}", 0, prompt, response, advantage=(1.0 if i % 2 else -0.5),
                               reward=float(i % 2), group_size=3, behaviour_logps=behaviour))
    return out


def spec(model: str, stage: int, algorithm: str) -> RunSpec:
    return RunSpec.model_validate({
        "name": "ranks", "algorithm": algorithm, "model": {"path": model}, "data": {"train": {"path": "unused.jsonl"}},
        "train": {"steps": 2, "batch_prompts": 8, "micro_batch_pairs": 2, "seed": 0},
        # a large Adam eps makes the update ~ lr·gradient, so equal weights mean equal gradients
        "optim": {"lr": 1e-2, "adam_eps": 1.0, "grad_clip": 100.0},
        "dpo": {"beta": 0.1, "loss_normalizer": "prompts"}, "deepspeed": {"zero_stage": stage},
        "sync": {"interval": 2}, "grpo": {"kl_beta": 0.1},  # GRPO off-policy: the clipped ratio and the KL term
    })


def main(model: str, out: str, algorithm: str = "dpo") -> None:
    ranks = join_trainer_group()
    examples = pairs(5) if algorithm == "dpo" else group_samples(9)
    batch = StepExamples(examples=examples, prompts=8)
    for stage in STAGES:
        engine = TrainingEngine(spec(model, stage, algorithm), ranks=ranks)
        metrics = engine.train_step(batch)
        state = engine.policy_state_dict()
        if ranks.is_driver:
            assert state is not None
            tensors = {k: v.float().contiguous().clone() for k, v in state.items()}
            tensors["__loss__"] = torch.tensor([metrics["loss"]])
            save_file(tensors, str(Path(out) / f"{algorithm}-stage{stage}-world{ranks.world_size}.safetensors"))
        engine.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
