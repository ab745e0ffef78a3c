"""DPO pair selection from scored groups (docs/architecture.md, algorithms).

Verifiable rewards (1.0 correct / 0.0 wrong): chosen = a random correct sample, rejected = a random incorrect
one; groups whose samples are all correct or all wrong form no pair and are skipped with a reason. Reward-model
scores: chosen = highest, rejected = lowest (ties broken at random); a group with all scores equal is skipped.

The randomness comes from a `random.Random` seeded from (train.seed, prompt_id), so the same group always gives
the same pair — a replayed step after a trainer restart trains on exactly the same data.

`dpo.pair_rule: group` is the paper's GroupDPO (§4.2): every correct × every incorrect sample of a prompt (every
highest × every lowest for reward-model scores), each pair weighted 1 / (that prompt's pairs), so a prompt's pair
losses are averaged and it weighs as much as under the one-pair rule.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Literal

from semirl.core.rewards import is_correct, scored_by_reward_model
from semirl.proto import types_pb2

SKIP_ALL_CORRECT = "all_correct"
SKIP_ALL_WRONG = "all_wrong"
SKIP_ALL_TIED = "all_tied"
SKIP_TOO_FEW = "too_few_samples"
SKIP_MALFORMED = "malformed"


@dataclass(frozen=True)
class Pair:
    prompt_id: str
    policy_version: int
    prompt_token_ids: tuple[int, ...]
    chosen_token_ids: tuple[int, ...]
    rejected_token_ids: tuple[int, ...]
    chosen_index: int
    rejected_index: int
    weight: float = 1.0  # the pair's share of its prompt's loss (GroupDPO: 1 / the prompt's pairs)


PairRule = Literal["random", "group"]


@dataclass
class PairBatch:
    pairs: list[Pair] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # prompt_id -> reason

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)


def pair_rng(seed: int, prompt_id: str) -> random.Random:
    """A generator that depends only on (seed, prompt_id), stable across processes and Python versions."""
    digest = hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def select_pairs(scored: types_pb2.ScoredGroup, seed: int, rule: PairRule = "random") -> tuple[list[Pair], str]:
    """The DPO pairs of one scored group (one, or GroupDPO's all), or ([], skip reason)."""
    group = scored.group
    prompt_id = group.task.prompt_id
    rewards = list(scored.rewards)
    if len(rewards) != len(group.samples):
        return [], SKIP_MALFORMED
    # A sample without tokens cannot be scored by the policy: it is never chosen or rejected.
    usable = [i for i, sample in enumerate(group.samples) if len(sample.token_ids) > 0]
    if len(usable) < 2:
        return [], SKIP_TOO_FEW
    if scored_by_reward_model(group.task):
        best = max(rewards[i] for i in usable)
        worst = min(rewards[i] for i in usable)
        if best == worst:
            return [], SKIP_ALL_TIED
        winners = [i for i in usable if rewards[i] == best]
        losers = [i for i in usable if rewards[i] == worst]
    else:
        winners = [i for i in usable if is_correct(rewards[i])]
        losers = [i for i in usable if not is_correct(rewards[i])]
        if not losers:
            return [], SKIP_ALL_CORRECT
        if not winners:
            return [], SKIP_ALL_WRONG
    if rule == "group":
        chosen_rejected = [(c, r) for c in winners for r in losers]
    else:
        rng = pair_rng(seed, prompt_id)
        chosen_rejected = [(rng.choice(winners), rng.choice(losers))]
    weight = 1.0 / len(chosen_rejected)
    prompt = tuple(group.prompt_token_ids)
    return [
        Pair(prompt_id=prompt_id, policy_version=int(group.policy_version), prompt_token_ids=prompt,
             chosen_token_ids=tuple(group.samples[c].token_ids), rejected_token_ids=tuple(group.samples[r].token_ids),
             chosen_index=c, rejected_index=r, weight=weight)
        for c, r in chosen_rejected
    ], ""


def select_pair(scored: types_pb2.ScoredGroup, seed: int) -> tuple[Pair | None, str]:
    """The one DPO pair of a scored group (a random correct and a random wrong sample), or (None, skip reason)."""
    pairs, reason = select_pairs(scored, seed)
    return (pairs[0] if pairs else None), reason


def build_pairs(groups: list[types_pb2.ScoredGroup], seed: int, rule: PairRule = "random") -> PairBatch:
    batch = PairBatch()
    for scored in groups:
        pairs, reason = select_pairs(scored, seed, rule)
        if reason:
            batch.skipped[scored.group.task.prompt_id] = reason
        else:
            batch.pairs.extend(pairs)
    return batch
