"""DPO pair selection from scored groups (docs/architecture.md, algorithms).

Verifiable rewards (1.0 correct / 0.0 wrong): chosen = a random correct sample, rejected = a random incorrect
one; groups whose samples are all correct or all wrong form no pair and are skipped with a reason. Reward-model
scores: chosen = highest, rejected = lowest (ties broken at random); a group with all scores equal is skipped.

The randomness comes from a `random.Random` seeded from (train.seed, prompt_id), so the same group always gives
the same pair — a replayed step after a trainer restart trains on exactly the same data.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from semirl.proto import types_pb2

CORRECT_THRESHOLD = 0.5

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


def select_pair(scored: types_pb2.ScoredGroup, seed: int) -> tuple[Pair | None, str]:
    """The DPO pair of one scored group, or (None, skip reason)."""
    group = scored.group
    prompt_id = group.task.prompt_id
    rewards = list(scored.rewards)
    if len(rewards) != len(group.samples):
        return None, SKIP_MALFORMED
    # A sample without tokens cannot be scored by the policy: it is never chosen or rejected.
    usable = [i for i, sample in enumerate(group.samples) if len(sample.token_ids) > 0]
    if len(usable) < 2:
        return None, SKIP_TOO_FEW
    rng = pair_rng(seed, prompt_id)
    if group.task.reward_source == types_pb2.REWARD_SOURCE_REWARD_MODEL:
        best = max(rewards[i] for i in usable)
        worst = min(rewards[i] for i in usable)
        if best == worst:
            return None, SKIP_ALL_TIED
        chosen = rng.choice([i for i in usable if rewards[i] == best])
        rejected = rng.choice([i for i in usable if rewards[i] == worst])
    else:
        correct = [i for i in usable if rewards[i] > CORRECT_THRESHOLD]
        wrong = [i for i in usable if rewards[i] <= CORRECT_THRESHOLD]
        if not wrong:
            return None, SKIP_ALL_CORRECT
        if not correct:
            return None, SKIP_ALL_WRONG
        chosen = rng.choice(correct)
        rejected = rng.choice(wrong)
    pair = Pair(
        prompt_id=prompt_id,
        policy_version=int(group.policy_version),
        prompt_token_ids=tuple(group.prompt_token_ids),
        chosen_token_ids=tuple(group.samples[chosen].token_ids),
        rejected_token_ids=tuple(group.samples[rejected].token_ids),
        chosen_index=chosen,
        rejected_index=rejected,
    )
    return pair, ""


def build_pairs(groups: list[types_pb2.ScoredGroup], seed: int) -> PairBatch:
    batch = PairBatch()
    for scored in groups:
        pair, reason = select_pair(scored, seed)
        if pair is None:
            batch.skipped[scored.group.task.prompt_id] = reason
        else:
            batch.pairs.append(pair)
    return batch
