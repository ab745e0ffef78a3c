"""What a reward means (core/rewards.py): one threshold for "correct", one stream per source, scores split per
group, and names that agree with the run spec's."""

from __future__ import annotations

from typing import get_args

import pytest

from semirl.core import keys
from semirl.core.rewards import (
    CORRECT_THRESHOLD,
    REWARD_SOURCES,
    is_correct,
    output_stream,
    scored_by_reward_model,
    scorer_stream,
    source_name,
    split_per_group,
)
from semirl.proto import types_pb2
from semirl.spec import RewardSourceName


def test_correct_is_strictly_above_the_threshold() -> None:
    assert is_correct(1.0) and not is_correct(0.0)
    assert not is_correct(CORRECT_THRESHOLD) and is_correct(CORRECT_THRESHOLD + 1e-9)


def test_each_source_has_its_stream_and_an_unknown_source_is_the_verifiers() -> None:
    rm = types_pb2.PromptTask(reward_source=types_pb2.REWARD_SOURCE_REWARD_MODEL)
    unknown = types_pb2.PromptTask(reward_source=99)
    assert scorer_stream(rm) == keys.TO_REWARD and scored_by_reward_model(rm) and source_name(rm) == "reward_model"
    for task in (types_pb2.PromptTask(), unknown):
        assert scorer_stream(task) == keys.TO_VERIFY and source_name(task) == "verifier"
        assert not scored_by_reward_model(task)


def test_scored_groups_go_to_training_or_evaluation_by_purpose() -> None:
    assert output_stream(types_pb2.PromptTask(purpose=types_pb2.TASK_PURPOSE_EVAL)) == keys.EVAL_SCORED
    assert output_stream(types_pb2.PromptTask(purpose=types_pb2.TASK_PURPOSE_TRAIN)) == keys.SCORED


def test_the_spec_names_the_same_sources() -> None:
    assert set(get_args(RewardSourceName)) == set(REWARD_SOURCES)


def test_scores_split_back_into_their_groups() -> None:
    assert split_per_group([1.0, 0.0, 1.0, 0.5], [1, 0, 3]) == [[1.0], [], [0.0, 1.0, 0.5]]
    with pytest.raises(ValueError, match="3 scores for groups of 4 samples"):
        split_per_group([1.0, 0.0, 1.0], [2, 2])
