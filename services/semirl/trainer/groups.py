"""GRPO's training examples from scored groups: every usable sample with its group-relative advantage
(docs/architecture.md, algorithms: GRPO).

A group whose usable samples all have the same reward has zero advantage everywhere: it contributes nothing to
the policy gradient and is skipped with a reason (counted like DPO's skipped prompts), as is a group with fewer
than two usable samples. Off-policy steps need the generator's per-token logprobs; a group without them (or
with a count that does not match its tokens) is skipped as malformed rather than trained with a wrong ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from semirl.proto import types_pb2
from semirl.trainer.grpo import group_advantages
from semirl.trainer.pairs import SKIP_ALL_TIED, SKIP_MALFORMED, SKIP_TOO_FEW

SKIP_NO_LOGPROBS = "no_logprobs"


@dataclass(frozen=True)
class GroupSample:
    prompt_id: str
    policy_version: int
    prompt_token_ids: tuple[int, ...]
    response_token_ids: tuple[int, ...]
    advantage: float
    reward: float
    group_size: int                       # usable samples of its group: the sample's loss is divided by it
    behaviour_logps: tuple[float, ...] = ()  # the generator's logprob of each response token (off-policy only)


@dataclass
class GroupBatch:
    samples: list[GroupSample] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # prompt_id -> reason


def group_samples(scored: types_pb2.ScoredGroup, *, std_normalize: bool,
                  need_logprobs: bool) -> tuple[list[GroupSample], str]:
    """One group's samples with advantages, or ([], skip reason)."""
    group = scored.group
    rewards = list(scored.rewards)
    if len(rewards) != len(group.samples) or not group.prompt_token_ids:
        return [], SKIP_MALFORMED
    usable = [i for i, sample in enumerate(group.samples) if len(sample.token_ids) > 0]
    if len(usable) < 2:
        return [], SKIP_TOO_FEW
    if need_logprobs and any(not _logprobs_match(group.samples[i]) for i in usable):
        return [], SKIP_NO_LOGPROBS
    values = torch.tensor([float(rewards[i]) for i in usable], dtype=torch.float64)
    if bool((values == values[0]).all()):
        return [], SKIP_ALL_TIED
    advantages = group_advantages(values, std_normalize=std_normalize)
    prompt = tuple(group.prompt_token_ids)
    samples = [
        GroupSample(
            prompt_id=group.task.prompt_id, policy_version=int(group.policy_version), prompt_token_ids=prompt,
            response_token_ids=tuple(group.samples[i].token_ids), advantage=float(advantages[k]),
            reward=float(values[k]), group_size=len(usable),
            behaviour_logps=tuple(group.samples[i].logprobs) if need_logprobs else (),
        )
        for k, i in enumerate(usable)
    ]
    return samples, ""


def _logprobs_match(sample: types_pb2.Sample) -> bool:
    return len(sample.logprobs) == len(sample.token_ids) and all(math.isfinite(v) for v in sample.logprobs)


def build_group_batch(groups: list[types_pb2.ScoredGroup], *, std_normalize: bool,
                      need_logprobs: bool) -> GroupBatch:
    batch = GroupBatch()
    for scored in groups:
        samples, reason = group_samples(scored, std_normalize=std_normalize, need_logprobs=need_logprobs)
        if reason:
            batch.skipped[scored.group.task.prompt_id] = reason
        else:
            batch.samples.extend(samples)
    return batch
