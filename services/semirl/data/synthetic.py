"""The synthetic verifiable task: addition of two 1-2 digit numbers.

Every problem is the full prompt text the tiny model was fine-tuned on (run specs use the template
"{problem}"), e.g. ``Q: 23+45=?\\nA:``; the reference response works the columns, `` 3+5=8, 2+4+0=6. \\boxed{68}``.
Train and eval are a fixed partition of the problem universe by a stable hash of the *unordered* operands {a, b}:
a+b and b+a always fall in the same split, so no seed can make them overlap and no eval problem has its swapped
twin in training or in the SFT warm start (addition commutes; a twin in training would be a memorised answer).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from semirl.core.files import atomic_writer

Split = Literal["train", "eval"]
MAX_OPERAND = 99
EVAL_MODULUS = 5  # one operand set in five (about one problem in five) belongs to the eval split


def _universe() -> list[tuple[int, str, int]]:
    """Every (a, op, b): all sums of two numbers in 0..99."""
    items: list[tuple[int, str, int]] = []
    for a in range(MAX_OPERAND + 1):
        for b in range(MAX_OPERAND + 1):
            items.append((a, "+", b))
    return items


def expression(a: int, op: str, b: int) -> str:
    return f"{a}{op}{b}"


def evaluate(expr: str) -> int:
    """The value of an ``a+b`` / ``a-b`` expression (no eval())."""
    for op in "+-":
        if op in expr:
            left, right = expr.split(op)
            return int(left) + int(right) if op == "+" else int(left) - int(right)
    raise ValueError(f"not an expression: {expr!r}")


def prompt_text(expr: str) -> str:
    return f"Q: {expr}=?\nA:"


def response_text(expr: str) -> str:
    """Column addition, units first: `` 5+8=13, 5+2+1=8. \\boxed{83}`` for 55+28 (a worked answer a tiny model
    can learn as a handful of one-digit facts)."""
    left, right = (int(x) for x in expr.split("+"))
    units = left % 10 + right % 10
    carry = units // 10
    tens = left // 10 + right // 10 + carry
    return f" {left % 10}+{right % 10}={units}, {left // 10}+{right // 10}+{carry}={tens}. \\boxed{{{left + right}}}"


def operand_set(expr: str) -> tuple[int, int]:
    """The unordered operands of ``a+b`` as (smaller, larger): the same for a+b and b+a."""
    left, right = (int(x) for x in expr.split("+"))
    return (left, right) if left <= right else (right, left)


def split_of(expr: str) -> Split:
    """The split of a problem, decided by its operand set alone."""
    low, high = operand_set(expr)
    digest = hashlib.sha256(f"{low}+{high}".encode()).digest()
    return "eval" if digest[0] % EVAL_MODULUS == 0 else "train"


def expression_of(problem: str) -> str:
    """Inverse of `prompt_text`."""
    return problem.removeprefix("Q: ").split("=", 1)[0]


def make_problems(n: int, seed: int, split: Split = "train") -> list[dict[str, str]]:
    """`n` distinct problems of `split`, in a seeded order: rows {"problem", "answer"} (answer like "47")."""
    pool = [expression(*item) for item in _universe()]
    pool = [expr for expr in pool if split_of(expr) == split]
    if n > len(pool):
        raise ValueError(f"only {len(pool)} {split} problems exist, asked for {n}")
    random.Random(seed).shuffle(pool)
    return [{"problem": prompt_text(expr), "answer": str(evaluate(expr))} for expr in pool[:n]]


def reference_response(row: dict[str, str]) -> str:
    return response_text(expression_of(row["problem"]))


def wrong_response(expr: str) -> str:
    """A worked answer with the mistake a tiny model makes most: the carry forgotten (or, without a carry, the
    tens digit off by one), in the same format as `response_text` — a preference pair's rejected response."""
    left, right = (int(x) for x in expr.split("+"))
    units = left % 10 + right % 10
    carry = units // 10
    wrong_carry = 0 if carry else 1
    tens = left // 10 + right // 10 + wrong_carry
    total = tens * 10 + units % 10
    return f" {left % 10}+{right % 10}={units}, {left // 10}+{right // 10}+{wrong_carry}={tens}. \\boxed{{{total}}}"


def preference_rows(rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """Rows {"prompt", "chosen", "rejected"} for problems: the worked answer and the forgotten-carry one."""
    return [{"prompt": row["problem"], "chosen": reference_response(row),
             "rejected": wrong_response(expression_of(row["problem"]))} for row in rows]


def write_jsonl(rows: Iterable[dict[str, str]], path: Path) -> Path:
    path = Path(path)
    with atomic_writer(path) as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path
