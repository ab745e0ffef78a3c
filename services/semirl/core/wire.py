"""What the wire's prompt fields mean: prompt ids, sampling seeds, prompt formats and answer formats.

Prompt ids are the idempotency keys of every stage downstream: "t{step}-{slot}" for training,
"e{step}-{set}-{index}" for evaluation (set names are unique in a spec, so ids are unique across sets and rounds).
The spec names formats in words (`chat`, `raw`; `latex`, `boxed`), the wire as enums; this module maps between
them both ways. An UNSPECIFIED enum (a task written before the field existed) reads as RAW and LATEX.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from semirl.proto import types_pb2
from semirl.spec import AnswerFormatName, PromptFormatName


def task_seed(train_seed: int, key: str) -> int:
    """A deterministic, non-zero 63-bit sampling seed for (train.seed, key); 0 would mean unseeded."""
    digest = hashlib.sha256(f"{train_seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1) or 1


def train_prompt_id(step: int, slot: int) -> str:
    return f"t{step}-{slot}"


def eval_prompt_id(step: int, eval_set: str, index: int) -> str:
    return f"e{step}-{eval_set}-{index}"


class PromptFormat(StrEnum):
    """How a task's prompt text is given to the model (the spec's `data.prompt_format`)."""

    CHAT = "chat"  # the user turn of the model's chat template, generation prompt on
    RAW = "raw"    # the text as it is


class AnswerFormat(StrEnum):
    """How a response's final answer is found (the spec's `data.*.answer_format`)."""

    LATEX = "latex"  # a \\boxed{} answer first, else any LaTeX-delimited one
    BOXED = "boxed"  # only \\boxed{} answers


PROMPT_FORMATS: dict[PromptFormatName, int] = {"chat": types_pb2.PROMPT_FORMAT_CHAT, "raw": types_pb2.PROMPT_FORMAT_RAW}
ANSWER_FORMATS: dict[AnswerFormatName, int] = {
    "latex": types_pb2.ANSWER_FORMAT_LATEX, "boxed": types_pb2.ANSWER_FORMAT_BOXED,
}


def prompt_format_of(task: types_pb2.PromptTask) -> PromptFormat:
    """CHAT for PROMPT_FORMAT_CHAT; RAW for RAW and for UNSPECIFIED."""
    return PromptFormat.CHAT if task.prompt_format == types_pb2.PROMPT_FORMAT_CHAT else PromptFormat.RAW


def answer_format_of(task: types_pb2.PromptTask) -> AnswerFormat:
    """BOXED for ANSWER_FORMAT_BOXED; LATEX for LATEX, UNSPECIFIED and any value this build does not know."""
    return AnswerFormat.BOXED if task.answer_format == types_pb2.ANSWER_FORMAT_BOXED else AnswerFormat.LATEX
