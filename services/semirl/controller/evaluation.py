"""Scoring evaluation rounds (pure functions; no Redis): scored groups in, one EvalResult per set and step out.

Accuracy is the fraction of samples asked that are correct, "correct" as training decides it (core/rewards.py); a
reward-model set also reports its mean score and score per token. The denominator is honest: always prompts x
samples asked. A prompt whose generation failed or came back short (decision 10: a task that can never be served
yields a group with no samples) counts its missing samples as wrong instead of leaving the round or shrinking the
denominator.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

from pydantic import BaseModel, Field

from semirl.core.rewards import is_correct, scored_by_reward_model
from semirl.core.runstate import EvalResult
from semirl.proto import types_pb2


class SetRound(BaseModel):
    """What a round released for one evaluation set."""

    prompts: int
    samples_per_prompt: int


class EvalRound(BaseModel):
    """A released evaluation round: the policy it evaluates and, per set, what it asked for."""

    policy_version: int
    policy_path: str
    sets: dict[str, SetRound] = Field(default_factory=dict)


class PromptOutcome(BaseModel):
    """One scored evaluation prompt (stored once per prompt id)."""

    eval_step: int
    eval_set: str
    policy_version: int      # the version that actually produced the samples
    asked: int               # samples asked for
    scored: int              # samples that came back and were scored, at most `asked`
    correct: float           # how many of those samples are correct (core/rewards.py's is_correct)
    score: float = 0.0       # sum of the rewards of those samples
    tokens: int              # response tokens of those samples
    reward_model: bool = False       # scored by the reward model (rewards are scores, not 1/0)
    score_per_token: float = 0.0     # sum over those samples of reward ÷ response tokens


def outcome_of(scored: types_pb2.ScoredGroup) -> PromptOutcome:
    task = scored.group.task
    asked = int(task.sampling.n)
    rewards = list(scored.rewards)[:asked]
    samples = list(scored.group.samples)[: len(rewards)]
    return PromptOutcome(
        eval_step=int(task.eval_step),
        eval_set=task.eval_set,
        policy_version=int(scored.group.policy_version),
        asked=asked,
        scored=len(rewards),
        correct=float(sum(is_correct(r) for r in rewards)),
        score=float(sum(rewards)),
        tokens=sum(len(sample.token_ids) for sample in samples),
        reward_model=scored_by_reward_model(task),
        score_per_token=sum(r / max(1, len(sample.token_ids)) for r, sample in zip(rewards, samples, strict=True)),
    )


def summarize(step: int, eval_set: str, policy_version: int, released: SetRound,
              outcomes: Iterable[PromptOutcome]) -> EvalResult:
    """The result of one set in one round; `outcomes` are that set's scored prompts (all of them)."""
    outcomes = list(outcomes)
    k = released.samples_per_prompt
    per_prompt = [o.correct / k for o in outcomes]
    # A released prompt with no outcome at all scores 0 too: it cannot raise the accuracy by going missing.
    per_prompt += [0.0] * max(0, released.prompts - len(outcomes))
    prompts = len(per_prompt)
    scored = sum(o.scored for o in outcomes)
    return EvalResult(
        step=step,
        eval_set=eval_set,
        policy_version=policy_version,
        accuracy=sum(per_prompt) / prompts if prompts else 0.0,
        stderr=statistics.stdev(per_prompt) / math.sqrt(prompts) if prompts >= 2 else None,
        prompts=prompts,
        samples_per_prompt=k,
        samples_expected=prompts * k,
        samples_scored=scored,
        failed_prompts=sum(o.scored < k for o in outcomes) + max(0, released.prompts - len(outcomes)),
        mean_response_tokens=sum(o.tokens for o in outcomes) / scored if scored else 0.0,
        **_reward_model_scores(outcomes, scored),
    )


def _reward_model_scores(outcomes: list[PromptOutcome], scored: int) -> dict[str, float | None]:
    """Sets scored by the reward model: the mean score, and the mean score ÷ response length (the paper picks
    checkpoints by the latter, since its reward model favours long answers). Over scored samples only."""
    graded = [o for o in outcomes if o.reward_model]
    count = sum(o.scored for o in graded)
    if not graded or not count:
        return {}
    return {"mean_score": sum(o.score for o in graded) / count,
            "mean_score_per_token": sum(o.score_per_token for o in graded) / count}
