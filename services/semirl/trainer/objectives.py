"""Training objectives: what a step's scored groups become and the loss of a micro batch (the objective seam).

The engine (`trainer/engine.py`) is generic DeepSpeed code: it shards a step's examples over the ranks, runs
micro batches, accumulates and steps. An objective tells it
- which examples a step's groups give, and which groups give none (skipped, with a reason);
- the (prompt, response) token sequences of a micro batch and whether a frozen reference model scores them;
- the summed loss of a micro batch from the policy's (and reference's) sequence logprobs, plus metric sums;
- the step's loss normalizer, the same number on every rank, so an N-rank step equals the 1-rank step.
Objectives are chosen by `spec.algorithm` from `OBJECTIVES` (a registry, not a chain of branches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from semirl.proto import types_pb2
from semirl.spec import RunSpec
from semirl.trainer.dpo import dpo_loss
from semirl.trainer.groups import GroupSample, build_group_batch
from semirl.trainer.grpo import grpo_loss
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
    sums: dict[str, float]          # metric sums over the micro batch's examples (the step reports their mean)
    maxima: dict[str, float] = field(default_factory=dict)  # metrics the step reports as a maximum


class Objective(Protocol):
    name: ClassVar[str]
    needs_reference: bool
    entropy_grad: bool
    metric_names: tuple[str, ...]
    max_metric_names: tuple[str, ...]
    micro_batch_examples: int  # examples per forward pass on a rank (train.micro_batch_pairs pairs' worth)

    def examples(self, groups: list[types_pb2.ScoredGroup]) -> StepExamples: ...

    def sequences(self, chunk: Sequence[Any]) -> list[TokenSequence]: ...

    def loss(self, chunk: Sequence[Any], policy: SeqLogps, reference: SeqLogps | None) -> MicroBatchLoss: ...

    def normalizer(self, batch: StepExamples) -> float: ...


class DPOObjective:
    """Sequence-level DPO on (chosen, rejected) pairs; chosen rows first, then rejected rows (trainer/dpo.py)."""

    name: ClassVar[str] = "dpo"
    metric_names = ("loss", "chosen_logp", "rejected_logp", "margin", "pref_accuracy", "reward_chosen",
                    "reward_rejected", "pair_tokens", "entropy")
    max_metric_names = ()

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.needs_reference = True
        self.entropy_grad = spec.dpo.entropy_coef > 0
        self.micro_batch_examples = spec.train.micro_batch_pairs

    def examples(self, groups: list[types_pb2.ScoredGroup]) -> StepExamples:
        batch = build_pairs(groups, self.spec.train.seed, rule=self.spec.dpo.pair_rule)
        return StepExamples(examples=batch.pairs, skipped=dict(batch.skipped), prompts=len(groups))

    def sequences(self, chunk: Sequence[Any]) -> list[TokenSequence]:
        return ([(p.prompt_token_ids, p.chosen_token_ids) for p in chunk]
                + [(p.prompt_token_ids, p.rejected_token_ids) for p in chunk])

    def normalizer(self, batch: StepExamples) -> float:
        """fairseq2 (the paper): summed pair losses ÷ prompts in the batch, skipped ones included; TRL: ÷ pairs
        (with GroupDPO's weights, ÷ the prompts that gave pairs: each prompt's pairs are averaged)."""
        if self.spec.dpo.loss_normalizer == "prompts":
            return float(max(1, batch.prompts))
        return float(max(1.0, sum(pair.weight for pair in batch.examples)))

    def loss(self, chunk: Sequence[Any], policy: SeqLogps, reference: SeqLogps | None) -> MicroBatchLoss:
        assert reference is not None, "DPO needs the reference model's logprobs"
        dpo = self.spec.dpo
        m = len(chunk)
        result = dpo_loss(
            policy.logps[:m], policy.logps[m:], reference.logps[:m], reference.logps[m:],
            beta=dpo.beta, chosen_tokens=policy.tokens[:m], rejected_tokens=policy.tokens[m:],
            length_normalize=dpo.length_normalize, nll_coef=dpo.nll_coef,
            entropy=policy.entropy[:m], entropy_coef=dpo.entropy_coef,
        )
        weights = torch.tensor([pair.weight for pair in chunk], dtype=result.losses.dtype,
                               device=result.losses.device)
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
        return MicroBatchLoss(loss_sum=(result.losses * weights).sum(), sums=sums)


class GRPOObjective:
    """GRPO on every usable sample of a group with a group-relative advantage (trainer/grpo.py, groups.py).

    A sample's loss is its sequence loss ÷ its group's size (averaged over the group); the step sums over prompts
    and divides by the step's prompts, skipped ones included (`normalizer`), the same number on every rank.
    On-policy steps (spec.grpo_on_policy) use ratio 1; off-policy ones the generator's per-token logprobs.
    """

    name: ClassVar[str] = "grpo"
    metric_names = ("loss", "kl", "advantage_abs", "clip_fraction", "ratio_mean", "entropy", "sample_logp")
    max_metric_names = ("ratio_max",)

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.needs_reference = spec.grpo.kl_beta > 0
        self.entropy_grad = False
        self.off_policy = not spec.grpo_on_policy
        self.micro_batch_examples = 2 * spec.train.micro_batch_pairs  # a pair is two sequences

    def examples(self, groups: list[types_pb2.ScoredGroup]) -> StepExamples:
        batch = build_group_batch(groups, std_normalize=self.spec.grpo.std_normalize, need_logprobs=self.off_policy)
        return StepExamples(examples=batch.samples, skipped=dict(batch.skipped), prompts=len(groups))

    def sequences(self, chunk: Sequence[Any]) -> list[TokenSequence]:
        return [(s.prompt_token_ids, s.response_token_ids) for s in chunk]

    def normalizer(self, batch: StepExamples) -> float:
        return float(max(1, batch.prompts))

    def loss(self, chunk: Sequence[Any], policy: SeqLogps, reference: SeqLogps | None) -> MicroBatchLoss:
        assert policy.mask is not None
        grpo = self.spec.grpo
        like = policy.token_logps
        advantages = like.new_tensor([s.advantage for s in chunk])
        result = grpo_loss(
            like, policy.mask, advantages,
            behaviour_logps=behaviour_token_logps(chunk, like) if self.off_policy else None,
            ref_logps=reference.token_logps if reference is not None else None,
            kl_beta=grpo.kl_beta, clip_eps=grpo.clip_eps, off_policy_loss=grpo.off_policy_loss,
            is_cap=grpo.is_cap, length_normalize=grpo.length_normalize,
        )
        group_share = like.new_tensor([1.0 / s.group_size for s in chunk])
        sums = {
            "loss": float(result.losses.detach().sum()),
            "kl": float(result.kl.sum()),
            "advantage_abs": float(advantages.abs().sum()),
            "clip_fraction": float(result.clip_fraction.sum()),
            "ratio_mean": float(result.ratio_mean.sum()),
            "entropy": float(policy.entropy.detach().sum()),
            "sample_logp": float(policy.logps.detach().sum()),
        }
        return MicroBatchLoss(loss_sum=(result.losses * group_share).sum(), sums=sums,
                              maxima={"ratio_max": float(result.ratio_max.max())})


def behaviour_token_logps(chunk: Sequence[GroupSample], like: torch.Tensor) -> torch.Tensor:
    """The generator's logprob of each response token, in `SeqLogps.token_logps`' columns: the token at
    position len(prompt) + j is predicted at column len(prompt) − 1 + j."""
    out = torch.zeros_like(like)
    for row, sample in enumerate(chunk):
        start = len(sample.prompt_token_ids) - 1
        values = like.new_tensor(sample.behaviour_logps)
        out[row, start : start + len(values)] = values
    return out


OBJECTIVES: dict[str, type[DPOObjective] | type[GRPOObjective]] = {
    DPOObjective.name: DPOObjective, GRPOObjective.name: GRPOObjective,
}


def objective_for(spec: RunSpec) -> Objective:
    try:
        return OBJECTIVES[spec.algorithm](spec)
    except KeyError:
        raise ValueError(f"no training objective for algorithm {spec.algorithm!r}") from None
