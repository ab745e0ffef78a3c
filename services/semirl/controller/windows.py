"""The prompt tasks of a sync window and of an evaluation round (pure functions; no Redis, no I/O).

Window w holds the tasks of trainer steps `spec.window_steps(w)`; every task of step t carries policy version
v(t) = spec.policy_version_for_step(t) (docs/architecture.md, the sync rule). Asynchronous runs
(sync.max_staleness) instead carry the newest committed version at release and, as `oldest_policy`, the oldest
version step t accepts: a generator serves them with whatever version of the run it holds within that range.
Task ids are the idempotency keys of every stage downstream: "t{step}-{slot}" for training,
"e{step}-{set}-{index}" for evaluation (set names are unique in a spec, so ids are unique across sets and rounds).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

from semirl.proto import types_pb2
from semirl.spec import DatasetSpec, RunSpec
from semirl.tasks.dataset import Problem, ProblemSchedule, format_prompt

REWARD_SOURCES = {
    "verifier": types_pb2.REWARD_SOURCE_VERIFIER,
    "reward_model": types_pb2.REWARD_SOURCE_REWARD_MODEL,
}
PROMPT_FORMATS = {"chat": types_pb2.PROMPT_FORMAT_CHAT, "raw": types_pb2.PROMPT_FORMAT_RAW}
ANSWER_FORMATS = {"latex": types_pb2.ANSWER_FORMAT_LATEX, "boxed": types_pb2.ANSWER_FORMAT_BOXED}


def task_seed(train_seed: int, key: str) -> int:
    """A deterministic, non-zero 63-bit sampling seed for (train.seed, key); 0 would mean unseeded."""
    digest = hashlib.sha256(f"{train_seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1) or 1


def train_prompt_id(step: int, slot: int) -> str:
    return f"t{step}-{slot}"


def eval_prompt_id(step: int, eval_set: str, index: int) -> str:
    return f"e{step}-{eval_set}-{index}"


def build_window_tasks(
    run_id: str,
    spec: RunSpec,
    window: int,
    problems: list[Problem],
    policy_path: Callable[[int], str],
    newest_version: int = 0,
) -> list[types_pb2.PromptTask]:
    """The training tasks of window `window`; `policy_path(v)` gives the directory of committed version v and
    `newest_version` is the newest committed version (what asynchronous tasks name as their policy)."""
    schedule = ProblemSchedule(problems, spec.train.batch_prompts, spec.data.shuffle_seed)
    tasks: list[types_pb2.PromptTask] = []
    for step in spec.window_steps(window):
        oldest = None
        if spec.sync.asynchronous:
            version = newest_version
            first = spec.oldest_accepted_version(step)
            oldest = types_pb2.PolicyRef(version=first, path=policy_path(first))
        else:
            version = spec.policy_version_for_step(step)
        policy = types_pb2.PolicyRef(version=version, path=policy_path(version))
        for slot in range(spec.train.batch_prompts):
            problem = schedule.problem_for(step, slot)
            prompt_id = train_prompt_id(step, slot)
            tasks.append(
                types_pb2.PromptTask(
                    run_id=run_id,
                    prompt_id=prompt_id,
                    attempt=0,
                    purpose=types_pb2.TASK_PURPOSE_TRAIN,
                    prompt=format_prompt(spec.data.prompt_template, problem),
                    gold_answer=problem.answer,
                    reward_source=REWARD_SOURCES[problem.reward_source],
                    sampling=types_pb2.SamplingParams(
                        n=spec.sampling.n,
                        temperature=spec.sampling.temperature,
                        top_p=spec.sampling.top_p,
                        max_tokens=spec.sampling.max_tokens,
                        seed=task_seed(spec.train.seed, prompt_id) if spec.sampling.seeded else 0,
                        logprobs=spec.sample_logprobs,
                    ),
                    policy=policy,
                    window=window,
                    train_step=step,
                    prompt_format=PROMPT_FORMATS[spec.data.prompt_format],
                    answer_format=ANSWER_FORMATS[spec.data.train.answer_format],
                    oldest_policy=oldest,
                )
            )
    return tasks


def eval_samples_per_prompt(spec: RunSpec, eval_set: DatasetSpec) -> int:
    """Samples per prompt of an evaluation set: its own `samples_per_prompt`, else eval.samples_per_prompt."""
    return eval_set.samples_per_prompt or spec.eval.samples_per_prompt


def eval_problems(spec: RunSpec, problems: list[Problem]) -> list[Problem]:
    """The held-out prompts of a set in every eval round: its first `eval.limit` rows, the same each round (the
    set's own `limit` was applied when it was read)."""
    return problems[: spec.eval.limit] if spec.eval.limit else list(problems)


def build_eval_tasks(
    run_id: str,
    spec: RunSpec,
    step: int,
    round_index: int,
    problems: Mapping[str, list[Problem]],
    policy: types_pb2.PolicyRef,
) -> list[types_pb2.PromptTask]:
    """The tasks of the eval round for trainer step `step` over every evaluation set, generated by `policy`.

    `problems` maps each set's name to its rows. Seeds depend on (set, prompt index) only, so every round
    samples with the same seeds (common random numbers: accuracy differences between rounds come from the
    policy, not from the draw).
    """
    tasks = []
    for eval_set in spec.data.eval:
        assert eval_set.name is not None  # the spec names every set
        n = eval_samples_per_prompt(spec, eval_set)
        for index, problem in enumerate(eval_problems(spec, problems[eval_set.name])):
            tasks.append(
                types_pb2.PromptTask(
                    run_id=run_id,
                    prompt_id=eval_prompt_id(step, eval_set.name, index),
                    attempt=0,
                    purpose=types_pb2.TASK_PURPOSE_EVAL,
                    prompt=format_prompt(spec.data.prompt_template, problem),
                    gold_answer=problem.answer,
                    reward_source=REWARD_SOURCES[problem.reward_source],
                    sampling=types_pb2.SamplingParams(
                        n=n,
                        temperature=spec.eval.temperature,
                        top_p=spec.eval.top_p,
                        max_tokens=spec.eval_max_tokens,
                        seed=task_seed(spec.train.seed, f"eval-{eval_set.name}-{index}"),
                    ),
                    policy=types_pb2.PolicyRef(version=policy.version, path=policy.path),
                    window=round_index,
                    eval_step=step,
                    eval_set=eval_set.name,
                    prompt_format=PROMPT_FORMATS[spec.data.prompt_format],
                    answer_format=ANSWER_FORMATS[eval_set.answer_format],
                )
            )
    return tasks
