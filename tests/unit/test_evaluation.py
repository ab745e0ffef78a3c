"""Scoring an eval round: the denominator is prompts x samples asked, the standard error is over prompts."""

from __future__ import annotations

import math
import statistics

import pytest

from semirl.controller.evaluation import PromptOutcome, SetRound, outcome_of, summarize
from semirl.proto import types_pb2

ROUND = SetRound(prompts=4, samples_per_prompt=4)


def _scored(rewards: list[float], asked: int = 4, tokens: int = 3) -> types_pb2.ScoredGroup:
    task = types_pb2.PromptTask(prompt_id="e2-math-0", purpose=types_pb2.TASK_PURPOSE_EVAL, eval_step=2,
                                eval_set="math", sampling=types_pb2.SamplingParams(n=asked))
    samples = [types_pb2.Sample(token_ids=[7] * tokens) for _ in rewards]
    return types_pb2.ScoredGroup(group=types_pb2.SampleGroup(task=task, samples=samples, policy_version=2),
                                 rewards=rewards)


def _outcomes(*rewards: list[float]) -> list[PromptOutcome]:
    return [outcome_of(_scored(r)) for r in rewards]


def test_outcome_of_a_scored_group() -> None:
    outcome = outcome_of(_scored([1.0, 0.0, 1.0, 1.0]))
    assert (outcome.eval_step, outcome.eval_set, outcome.policy_version) == (2, "math", 2)
    assert (outcome.asked, outcome.scored, outcome.correct, outcome.tokens) == (4, 4, 3.0, 12)
    # Samples beyond those asked for cannot raise a prompt's score.
    extra = outcome_of(_scored([1.0] * 6))
    assert (extra.scored, extra.correct) == (4, 4.0)


def test_accuracy_is_the_mean_over_prompts_and_samples() -> None:
    result = summarize(2, "math", 2, ROUND, _outcomes([1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]))
    assert result.accuracy == pytest.approx(7 / 16)
    assert (result.prompts, result.samples_per_prompt, result.samples_expected, result.samples_scored) == (4, 4, 16, 16)
    assert result.failed_prompts == 0 and result.mean_response_tokens == pytest.approx(3.0)
    per_prompt = [1.0, 0.5, 0.0, 0.25]
    assert result.stderr == pytest.approx(statistics.stdev(per_prompt) / math.sqrt(4))


def test_a_failed_generation_counts_as_wrong() -> None:
    full = summarize(2, "math", 2, ROUND, _outcomes([1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]))
    # The second prompt's generation failed: an empty group (decision 10), or one that came back short.
    empty = summarize(2, "math", 2, ROUND, _outcomes([1, 1, 1, 1], [], [1, 1, 0, 0], [1, 0, 0, 0]))
    short = summarize(2, "math", 2, ROUND, _outcomes([1, 1, 1, 1], [1, 1], [1, 1, 0, 0], [1, 0, 0, 0]))
    assert full.accuracy == pytest.approx(11 / 16)
    assert empty.accuracy == pytest.approx(7 / 16) and short.accuracy == pytest.approx(9 / 16)
    for result in (empty, short):
        assert result.samples_expected == 16 and result.failed_prompts == 1
    assert (empty.samples_scored, short.samples_scored) == (12, 14)
    assert empty.mean_response_tokens == pytest.approx(3.0)  # over the samples that exist


def test_a_prompt_with_no_outcome_counts_as_wrong() -> None:
    result = summarize(2, "math", 2, ROUND, _outcomes([1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]))
    assert result.accuracy == pytest.approx(12 / 16) and result.prompts == 4 and result.failed_prompts == 1


def test_standard_error_needs_two_prompts() -> None:
    one = summarize(0, "amc", 0, SetRound(prompts=1, samples_per_prompt=4), _outcomes([1, 0, 0, 0]))
    assert one.accuracy == pytest.approx(0.25) and one.stderr is None
    same = summarize(0, "amc", 0, SetRound(prompts=2, samples_per_prompt=4), _outcomes([1, 1, 0, 0], [0, 0, 1, 1]))
    assert same.stderr == pytest.approx(0.0)


def test_reward_model_sets_report_the_mean_score_and_the_score_per_token() -> None:
    """Scores, not 1/0: the mean over scored samples, and score ÷ response length (the paper's checkpoint pick)."""
    def rm(rewards: list[float], tokens: int) -> PromptOutcome:
        scored = _scored(rewards, tokens=tokens)
        scored.group.task.reward_source = types_pb2.REWARD_SOURCE_REWARD_MODEL
        return outcome_of(scored)

    result = summarize(2, "chat", 2, SetRound(prompts=2, samples_per_prompt=4),
                       [rm([2.0, 1.0, 0.5, 0.5], tokens=2), rm([4.0, 4.0], tokens=8)])
    assert result.mean_score == pytest.approx(12.0 / 6)
    assert result.mean_score_per_token == pytest.approx((4.0 / 2 + 8.0 / 8) / 6)
    # Accuracy counts samples above the threshold training uses (core/rewards.py), a missing one as wrong: 2 of 4
    # (0.5 is not above it) and 2 of 4.
    assert result.accuracy == pytest.approx((2 / 4 + 2 / 4) / 2)
    verifier = summarize(2, "math", 2, ROUND, _outcomes([1, 1, 1, 1]))
    assert verifier.mean_score is None and verifier.mean_score_per_token is None
