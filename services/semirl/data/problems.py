"""Problem sets as JSONL: the synthetic task here and MATH-500 / GSM8K / AMC23 on a GPU, one shape."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel

from semirl.core.rewards import REWARD_SOURCES
from semirl.spec import DatasetSpec, RewardSourceName

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$")



class Problem(BaseModel):
    id: str           # stable id within the dataset (row index unless the row has an id)
    problem: str
    answer: str       # the gold final answer (what math-verify compares against); "" for reward-model rows
    reward_source: RewardSourceName = "verifier"  # the row's own, else its dataset's (mixed tasks in one set)


def gold_answer(raw: object) -> str:
    """A row's final answer: GSM8K worked solutions end in `#### N`; numbers like 27.0 become 27."""
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    text = str(raw).strip()
    match = _GSM8K_FINAL.search(text)
    return match.group(1).replace(",", "") if match else text


def load_problems(dataset: DatasetSpec) -> list[Problem]:
    """Read `dataset.path`; rows missing the problem or answer field are an error naming the row."""
    problems: list[Problem] = []
    with Path(dataset.path).open() as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{dataset.path}:{line_no}: not valid JSON ({err})") from err
            except RecursionError as err:
                raise ValueError(f"{dataset.path}:{line_no}: nested too deeply") from err
            if not isinstance(row, dict):
                raise ValueError(f"{dataset.path}:{line_no}: a row must be a JSON object")
            problem = row.get(dataset.problem_field, row.get("question"))
            source = row.get("reward_source", dataset.reward_source)
            if source not in REWARD_SOURCES:
                raise ValueError(f"{dataset.path}:{line_no}: reward_source must be one of {', '.join(REWARD_SOURCES)}")
            answer = row.get(dataset.answer_field, "" if source == "reward_model" else None)
            if problem is None or answer is None:
                raise ValueError(
                    f"{dataset.path}:{line_no}: needs fields {dataset.problem_field!r} and {dataset.answer_field!r}"
                )
            if any(isinstance(value, dict | list) for value in (problem, answer)):
                raise ValueError(f"{dataset.path}:{line_no}: {dataset.problem_field!r} and {dataset.answer_field!r} "
                                 "must be text or numbers")
            row_id = row.get("unique_id", row.get("id", line_no - 1))
            row_id = str(row_id) if not isinstance(row_id, dict | list) else str(line_no - 1)
            problems.append(Problem(id=row_id, problem=str(problem), answer=gold_answer(answer),
                                    reward_source=source))
            if dataset.limit and len(problems) >= dataset.limit:
                break
    if not problems:
        raise ValueError(f"{dataset.path}: no problems")
    return problems


def format_prompt(template: str, problem: Problem) -> str:
    return template.replace("{problem}", problem.problem)


Row = TypeVar("Row")


class ProblemSchedule(Generic[Row]):
    """Which row (a problem, or a preference pair) goes to training slot (step t, slot j): a seeded shuffle,
    reshuffled every epoch."""

    def __init__(self, problems: list[Row], batch_prompts: int, seed: int) -> None:
        self.problems = problems
        self.batch_prompts = batch_prompts
        self.seed = seed
        self._epochs: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._epochs:
            order = list(range(len(self.problems)))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._epochs[epoch] = order
        return self._epochs[epoch]

    def problem_for(self, step: int, slot: int) -> Row:
        index = (step - 1) * self.batch_prompts + slot
        epoch, offset = divmod(index, len(self.problems))
        return self.problems[self._order(epoch)[offset]]
