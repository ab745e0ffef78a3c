"""What each supported dataset's rows look like, and how one becomes a training or evaluation problem.

Every source maps a raw row to a `PreparedRow` (id, problem, answer, source) or to the reason it is dropped:
- numinamath: AI-MO/NuminaMath-CoT (`problem`, `solution` ending in \\boxed{...}) and NuminaMath-1.5 (also
  `answer`, `question_type`); proofs, multiple choice and rows without a final answer have nothing to verify.
- math500: HuggingFaceH4/MATH-500 (`problem`, `answer`, `unique_id`).
- amc23: AMC 2023 (`problem` or `question`, a numeric `answer`).
- gsm8k: openai/gsm8k (`question`, a worked `answer` ending in `#### N`).
- wildchat: allenai/WildChat-1M conversations: the first user turn of English, non-toxic chats, with no
  answer (prompts for a reward model, not for the verifier).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from semirl.data.problems import gold_answer
from semirl.spec import RewardSourceName

MAX_PROBLEM_CHARS = 8_000  # longer prompts would not fit the paper's context with room for an answer
UNUSABLE_ANSWERS = {"", "proof", "notfound", "none", "n/a"}


class PreparedRow(BaseModel):
    id: str
    problem: str
    answer: str
    source: str
    reward_source: RewardSourceName = "verifier"  # who scores it: rows of mixed sets keep their own (wildchat: the RM)


class Dropped(Exception):  # noqa: N818 - a reason, not an error
    """A row that cannot be a problem of this kind; the message is the reason, counted per reason."""


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced; None without one."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    opening = text.find("{", start)
    if opening < 0:
        return None
    depth = 0
    for index in range(opening, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[opening + 1 : index].strip()
    return None


def _text(row: dict[str, Any], *names: str) -> str:
    for name in names:
        value = row.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return gold_answer(value)
    return ""


def _problem(row: dict[str, Any], *names: str) -> str:
    problem = _text(row, *names)
    if not problem:
        raise Dropped("no problem text")
    if len(problem) > MAX_PROBLEM_CHARS:
        raise Dropped("problem too long")
    return problem


def _verifiable(answer: str) -> str:
    if answer.strip().lower() in UNUSABLE_ANSWERS:
        raise Dropped("no final answer")
    return answer.strip()


def numinamath(row: dict[str, Any], index: int) -> PreparedRow:
    question_type = str(row.get("question_type") or "").lower()
    if question_type in ("proof", "mcq") or str(row.get("problem_type") or "").lower() == "proof":
        raise Dropped(f"question type {question_type or 'proof'}")
    problem = _problem(row, "problem")
    answer = _text(row, "answer") or last_boxed(str(row.get("solution") or "")) or ""
    answer = _verifiable(answer)
    if re.fullmatch(r"\(?[A-E]\)?", answer) or re.fullmatch(r"\\textbf\{\(?[A-E]\)?.*", answer):
        raise Dropped("multiple-choice letter")
    return PreparedRow(id=str(row.get("id", index)), problem=problem, answer=answer,
                       source=str(row.get("source") or "numinamath"))


def math500(row: dict[str, Any], index: int) -> PreparedRow:
    answer = _text(row, "answer") or last_boxed(str(row.get("solution") or "")) or ""
    return PreparedRow(id=str(row.get("unique_id", index)), problem=_problem(row, "problem"),
                       answer=_verifiable(answer), source="math500")


def amc23(row: dict[str, Any], index: int) -> PreparedRow:
    return PreparedRow(id=str(row.get("id", index)), problem=_problem(row, "problem", "question"),
                       answer=_verifiable(_text(row, "answer")), source="amc23")


def gsm8k(row: dict[str, Any], index: int) -> PreparedRow:
    worked = str(row.get("answer") or "")
    if "####" not in worked:
        raise Dropped("no #### final answer")
    return PreparedRow(id=str(row.get("idx", index)), problem=_problem(row, "question"),
                       answer=_verifiable(gold_answer(worked)), source="gsm8k")


def wildchat(row: dict[str, Any], index: int) -> PreparedRow:
    if str(row.get("language") or "English") != "English":
        raise Dropped("not English")
    if row.get("toxic") or row.get("redacted"):
        raise Dropped("toxic or redacted")
    turns = row.get("conversation") or []
    first = next((t for t in turns if isinstance(t, dict) and t.get("role") == "user"), None)
    if first is None:
        raise Dropped("no user turn")
    problem = _problem(first, "content")
    return PreparedRow(id=str(row.get("conversation_hash", index)), problem=problem, answer="", source="wildchat",
                       reward_source="reward_model")


SOURCES: dict[str, Callable[[dict[str, Any], int], PreparedRow]] = {
    "numinamath": numinamath, "math500": math500, "amc23": amc23, "gsm8k": gsm8k, "wildchat": wildchat,
}
