"""Training objectives: what a step's scored groups become and the loss of a micro batch (the objective seam).

The engine (`trainer/engine.py`) is generic DeepSpeed code: it shards a step's examples over the ranks, runs
micro batches, accumulates and steps. An objective tells it
- which examples a step's groups give, and which groups give none (skipped, with a reason);
- the (prompt, response) token sequences of a micro batch and whether a frozen reference model scores them;
- the summed loss of a micro batch from the policy's (and reference's) sequence logprobs, plus metric sums;
- the step's loss normalizer, the same number on every rank, so an N-rank step equals the 1-rank step.
Objectives are chosen by `spec.algorithm` from `OBJECTIVES`; GRPO plugs in here without touching the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from semirl.proto import types_pb2
from semirl.spec import RunSpec
from semirl.trainer.dpo import dpo_loss
from semirl.trainer.logprobs import SeqLogps
from semirl.trainer.pairs import build_pairs

TokenSequence = tuple[Sequence[int], Sequence[int]]  # (prompt token ids, response token ids)


@dataclass
class StepExamples:
    """A step's training examples, and the prompt ids of groups that gave none (-> reason)."""

    examples: list[Any]
    skipped: dict[str, str] = field(default_factory=dict)
    prompts: int = 0  # scored groups in the step, skipped ones included


@dataclass
class MicroBatchLoss:
    loss_sum: torch.Tensor          # summed loss of the micro batch's examples (differentiable)
    sums: dict[str, float]          # metric sums over the micro batch's examples


class Objective(Protocol):
    name: ClassVar[str]
    needs_reference: bool
    entropy_grad: bool
    metric_names: tuple[str, ...]

    def examples(self, groups: list[types_pb2.ScoredGroup]) -> StepExamples: ...

    def sequences(self, chunk: Sequence[Any]) -> list[TokenSequence]: ...

    def loss(self, chunk: Sequence[Any], policy: SeqLogps, reference: SeqLogps | None) -> MicroBatchLoss: ...

    def normalizer(self, batch: StepExamples) -> float: ...


class DPOObjective:
    """Sequence-level DPO on (chosen, rejected) pairs; chosen rows first, then rejected rows (trainer/dpo.py)."""

    name: ClassVar[str] = "dpo"
    metric_names = ("loss", "chosen_logp", "rejected_logp", "margin", "pref_accuracy", "reward_chosen",
                    "reward_rejected", "pair_tokens", "entropy")

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.needs_reference = True
        self.entropy_grad = spec.dpo.entropy_coef > 0

    def examples(self, groups: list[types_pb2.ScoredGroup]) -> StepExamples:
        batch = build_pairs(groups, self.spec.train.seed)
        return StepExamples(examples=batch.pairs, skipped=dict(batch.skipped), prompts=len(groups))

    def sequences(self, chunk: Sequence[Any]) -> list[TokenSequence]:
        return ([(p.prompt_token_ids, p.chosen_token_ids) for p in chunk]
                + [(p.prompt_token_ids, p.rejected_token_ids) for p in chunk])

    def normalizer(self, batch: StepExamples) -> float:
        """fairseq2 (the paper): summed pair losses ÷ prompts in the batch, skipped ones included; TRL: ÷ pairs."""
        if self.spec.dpo.loss_normalizer == "prompts":
            return float(max(1, batch.prompts))
        return float(max(1, len(batch.examples)))

    def loss(self, chunk: Sequence[Any], policy: SeqLogps, reference: SeqLogps | None) -> MicroBatchLoss:
        assert reference is not None, "DPO needs the reference model's logprobs"
        dpo = self.spec.dpo
        m = len(chunk)
        result = dpo_loss(
            policy.logps[:m], policy.logps[m:], reference.logps[:m], reference.logps[m:],
            beta=dpo.beta, chosen_tokens=policy.tokens[:m], rejected_tokens=policy.tokens[m:],
            length_normalize=dpo.length_normalize, nll_coef=dpo.nll_coef,
            entropy=(policy.entropy[:m] + policy.entropy[m:]) / 2, entropy_coef=dpo.entropy_coef,
        )
        margin = result.chosen_rewards - result.rejected_rewards
        sums = {
            "loss": float(result.losses.detach().sum()),
            "chosen_logp": float(policy.logps[:m].detach().sum()),
            "rejected_logp": float(policy.logps[m:].detach().sum()),
            "margin": float(margin.sum()),
            "pref_accuracy": float((margin > 0).float().sum()),
            "reward_chosen": float(result.chosen_rewards.sum()),
            "reward_rejected": float(result.rejected_rewards.sum()),
            "pair_tokens": float(policy.tokens.sum()) / 2,
            "entropy": float(policy.entropy.detach().sum()) / 2,
        }
        return MicroBatchLoss(loss_sum=result.losses.sum(), sums=sums)


OBJECTIVES: dict[str, type[DPOObjective]] = {DPOObjective.name: DPOObjective}


def objective_for(spec: RunSpec) -> Objective:
    try:
        return OBJECTIVES[spec.algorithm](spec)
    except KeyError:
        raise ValueError(f"no training objective for algorithm {spec.algorithm!r}") from None
