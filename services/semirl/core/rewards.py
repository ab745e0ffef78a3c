"""What a reward means, in one place: who scores a task, where its scored group goes, and what counts as correct.

- A task's reward source (the spec's `reward_source`: `verifier` or `reward_model`) names its scorer. Each source
  has one stream, consumer group, done-set stage and service (`SCORERS`); a task of a source this build does not
  know is the verifier's.
- A scored group goes to `scored` (training) or `eval_scored` (evaluation) by the task's purpose.
- A reward above `CORRECT_THRESHOLD` is correct. The verifier's rewards are 1.0 or 0.0; a reward model's are
  scores, and "correct" then means above the threshold too. Training's pairs (trainer/pairs.py), the trainer's
  accuracy metric, evaluation's accuracy (controller/evaluation.py) and the verifier's outcome metric all call
  `is_correct`, so they agree.
- A scorer scores every sample of a read in one batch; `split_per_group` cuts the flat scores back into groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from semirl.core import keys
from semirl.proto import types_pb2
from semirl.spec import RewardSourceName

T = TypeVar("T")

CORRECT_THRESHOLD = 0.5

REWARD_SOURCES: dict[RewardSourceName, int] = {  # the spec's name -> the wire's enum
    "verifier": types_pb2.REWARD_SOURCE_VERIFIER,
    "reward_model": types_pb2.REWARD_SOURCE_REWARD_MODEL,
}
SOURCE_NAMES: dict[int, RewardSourceName] = {source: name for name, source in REWARD_SOURCES.items()}


@dataclass(frozen=True)
class Scorer:
    """Where the groups of one reward source are scored."""

    stream: str   # the stream its groups are written to
    group: str    # the scorers' consumer group on it
    stage: str    # its done set (keys.done_key): each prompt scored at most once
    service: str  # the scoring service's name (registration, ownership of pending entries)


SCORERS = {
    types_pb2.REWARD_SOURCE_VERIFIER: Scorer(keys.TO_VERIFY, keys.VERIFIERS_GROUP, "verify", "verifier"),
    types_pb2.REWARD_SOURCE_REWARD_MODEL: Scorer(keys.TO_REWARD, keys.REWARDS_GROUP, "reward", "reward"),
}


def reward_source(task: types_pb2.PromptTask) -> int:
    """The task's reward source; one this build does not know (or UNSPECIFIED) is the verifier's."""
    return task.reward_source if task.reward_source in SCORERS else types_pb2.REWARD_SOURCE_VERIFIER


def scored_by_reward_model(task: types_pb2.PromptTask) -> bool:
    """Whether the task's rewards are a reward model's scores (ranked by value) rather than the verifier's 1/0."""
    return reward_source(task) == types_pb2.REWARD_SOURCE_REWARD_MODEL


def source_name(task: types_pb2.PromptTask) -> RewardSourceName:
    """The spec's name for the task's reward source (`verifier` or `reward_model`)."""
    return SOURCE_NAMES[reward_source(task)]


def scorer_stream(task: types_pb2.PromptTask) -> str:
    """The stream a generated group goes to: the reward model's for REWARD_MODEL tasks, else the verifier's."""
    return SCORERS[reward_source(task)].stream


def output_stream(task: types_pb2.PromptTask) -> str:
    """Where a scored group goes: `eval_scored` for evaluation tasks, `scored` (the trainer's) otherwise."""
    return keys.EVAL_SCORED if task.purpose == types_pb2.TASK_PURPOSE_EVAL else keys.SCORED


def is_correct(reward: float) -> bool:
    return reward > CORRECT_THRESHOLD


def split_per_group(scores: Sequence[T], counts: Sequence[int]) -> list[list[T]]:
    """`scores` of consecutive groups of `counts[i]` samples each, cut back into one list per group."""
    if sum(counts) != len(scores):
        raise ValueError(f"{len(scores)} scores for groups of {sum(counts)} samples")
    groups, position = [], 0
    for count in counts:
        groups.append(list(scores[position:position + count]))
        position += count
    return groups
