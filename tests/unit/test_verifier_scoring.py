"""math-verify scoring in a worker process with a hard per-item timeout (real math-verify, no mocks), in both
answer formats: LATEX (the paper's fairseq2 config, the default) and BOXED (only a \\boxed{} answer counts)."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from semirl.core.wire import AnswerFormat
from semirl.core.wire import answer_format_of as answer_format
from semirl.proto import types_pb2
from semirl.verifier import engine as scoring
from semirl.verifier.engine import Scorer, boxed_only, gold_text, score_in_process

LATEX, BOXED = AnswerFormat.LATEX, AnswerFormat.BOXED
# sympy evaluates this power tower exactly: minutes of C-level big-integer work that SIGALRM cannot stop.
PATHOLOGICAL = "The answer is \\boxed{9^{9^{9^{9^{9}}}}}"
PAPER_FORMAT = "The final answer is $\\frac{1}{2}$. I hope it is correct."
# The shared benchmark data lives next to the repository (../shared/data), not in it.
MATH500 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "math500.jsonl"
BOX_ONE_LEVEL = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")  # \boxed{X}, X with at most one level of braces


@pytest.fixture(scope="module")
def scorer() -> Iterator[Scorer]:
    with Scorer(timeout_s=3.0) as instance:
        yield instance


# (response, gold, score in LATEX, score in BOXED)
CASES = [
    # the paper's answer format and other unboxed LaTeX answers: only LATEX reads them
    (PAPER_FORMAT, "\\frac{1}{2}", 1.0, 0.0),
    ("The final answer is $0.5$. I hope it is correct.", "\\frac12", 1.0, 0.0),
    ("$\\frac{1}{2}$", "\\frac{1}{2}", 1.0, 0.0),
    ("The answer is $0.5$.", "\\frac{1}{2}", 1.0, 0.0),
    ("Answer: $x = 3$", "3", 1.0, 0.0),
    # boxed answers count in both, in equivalent forms
    ("So the answer is $\\boxed{42}$.", "42", 1.0, 1.0),
    ("The final answer is $\\boxed{3}$", "3", 1.0, 1.0),
    ("\\boxed{\\frac{1}{2}}", "0.5", 1.0, 1.0),
    ("\\boxed{0.5}", "\\frac12", 1.0, 1.0),
    ("\\boxed{\\frac12}", "1/2", 1.0, 1.0),
    ("\\boxed{1/2}", "\\frac{1}{2}", 1.0, 1.0),
    ("\\boxed{50\\%}", "0.5", 1.0, 1.0),
    ("\\boxed{0.333333}", "\\frac13", 1.0, 1.0),   # equal at precision 6
    ("Thus $x = \\boxed{2\\sqrt{2}}$", "\\sqrt{8}", 1.0, 1.0),
    ("\\boxed{(1, 2)}", "(1,2)", 1.0, 1.0),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}", 1.0, 1.0),
    ("First $7$, then \\boxed{3}", "3", 1.0, 1.0),  # the boxed answer comes first
    ("\\boxed{\\frac{1}{2}}", "$0.5$", 1.0, 1.0),    # a gold already in $...$ is not wrapped again
    # wrong answers
    ("\\boxed{41}", "42", 0.0, 0.0),
    ("\\boxed{0.51}", "\\frac12", 0.0, 0.0),
    ("\\boxed{0.3333}", "\\frac13", 0.0, 0.0),
    ("The final answer is $\\frac{1}{3}$. I hope it is correct.", "\\frac{1}{2}", 0.0, 0.0),
    ("$\\frac{1}{3}$", "\\frac{1}{2}", 0.0, 0.0),
    ("\\boxed{1} or maybe \\boxed{2}", "2", 0.0, 0.0),  # several boxes read as one set, as in the paper
    # no answer either format reads, garbage, empty
    ("The answer is 42.", "42", 0.0, 0.0),          # no LaTeX delimiters
    ("\\fbox{5}", "5", 0.0, 0.0),                    # not a spelling math-verify reads
    ("\\boxed{}", "42", 0.0, 0.0),
    ("", "42", 0.0, 0.0),
    ("   \n", "42", 0.0, 0.0),
    ("\\boxed{42}", "", 0.0, 0.0),
    ("\\boxed{42}", "   ", 0.0, 0.0),
    ("garbage }{ \\boxed{ ((( ", "1", 0.0, 0.0),
    ("答案是 \\boxed{三} 🙂\u0000\udcff", "3", 0.0, 0.0),
    ("\\boxed{\\frac{1}{0}}", "1", 0.0, 0.0),
]


@pytest.mark.parametrize(("response", "gold", "latex", "boxed"), CASES)
def test_scores_in_both_answer_formats(scorer: Scorer, response: str, gold: str, latex: float, boxed: float) -> None:
    assert scorer.score(response, gold, answer_format=LATEX) == latex
    assert scorer.score(response, gold, answer_format=BOXED) == boxed


def test_latex_is_the_default_format(scorer: Scorer) -> None:
    assert scorer.score(PAPER_FORMAT, "\\frac{1}{2}") == 1.0
    assert scorer.score_batch([(PAPER_FORMAT, "0.5"), ("$\\frac{1}{2}$", "0.5")]) == [1.0, 1.0]
    assert score_in_process(PAPER_FORMAT, "0.5") == 1.0


def test_huge_and_deeply_nested_responses_score_zero(scorer: Scorer) -> None:
    huge = "x" * 2_000_000 + "\\boxed{7}" + "y" * 1000
    assert scorer.score_batch([(huge, "8"), ("\\boxed{" + "(" * 5000 + "}", "1")], answer_format=LATEX) == [0.0, 0.0]
    assert scorer.score(huge, "7", answer_format=BOXED) == 1.0  # found in 2 MB, and cheaply


def test_score_in_process_reads_both_formats_in_a_main_thread() -> None:
    assert score_in_process(PAPER_FORMAT, "\\frac{1}{2}", LATEX) == 1.0
    assert score_in_process(PAPER_FORMAT, "\\frac{1}{2}", BOXED) == 0.0
    assert score_in_process("so \\boxed{0.5}", "\\frac{1}{2}", BOXED) == 1.0


def test_non_strings_never_raise(scorer: Scorer) -> None:
    assert scorer.score(None, "1") == 0.0  # type: ignore[arg-type]
    assert scorer.score("\\boxed{1}", 1) == 0.0  # type: ignore[arg-type]
    assert score_in_process(b"\\boxed{1}", "1") == 0.0  # type: ignore[arg-type]
    assert score_in_process(b"\\boxed{1}", "1", BOXED) == 0.0  # type: ignore[arg-type]


def test_the_gold_is_wrapped_as_the_paper_does() -> None:
    assert gold_text("\\frac{1}{2}") == "$\\frac{1}{2}$"
    assert gold_text("$3$") == "$3$"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("no box here", ""),
        ("so $\\boxed{42}$.", "\\boxed{42}"),
        ("\\boxed{a{b}c} and \\boxed{d}", "\\boxed{a{b}c} \\boxed{d}"),
        ("\\boxed{\\boxed{5}} then", "\\boxed{\\boxed{5}}"),       # the outer box only
        ("\\boxed{3} then \\boxed{ unbalanced", "\\boxed{3}"),
        ("\\boxed 5 and \\fbox{6}", ""),
    ],
)
def test_boxed_only_keeps_just_the_boxed_expressions(response: str, expected: str) -> None:
    assert boxed_only(response) == expected


def test_boxed_only_is_linear_on_many_unclosed_boxes() -> None:
    started = time.monotonic()
    assert boxed_only("\\boxed{" * 100_000) == ""
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (types_pb2.ANSWER_FORMAT_UNSPECIFIED, LATEX),
        (types_pb2.ANSWER_FORMAT_LATEX, LATEX),
        (types_pb2.ANSWER_FORMAT_BOXED, BOXED),
    ],
)
def test_the_task_answer_format_maps_to_a_scoring_format(wire: int, expected: AnswerFormat) -> None:
    assert answer_format(types_pb2.PromptTask(answer_format=wire)) is expected


@pytest.mark.parametrize("fmt", [LATEX, BOXED])
def test_pathological_input_is_cut_off_and_worker_keeps_serving(scorer: Scorer, fmt: AnswerFormat) -> None:
    pid_before = scorer.worker_pid
    timeouts_before = scorer.timeouts
    started = time.monotonic()
    results = scorer.score_batch(
        [("\\boxed{2}", "2"), (PATHOLOGICAL, "1"), ("\\boxed{3}", "3"), ("\\boxed{4}", "5")], timeout_s=2.0,
        answer_format=fmt,
    )
    elapsed = time.monotonic() - started
    assert results == [1.0, 0.0, 1.0, 0.0]
    assert elapsed < 30, elapsed  # 2 s limit + one worker respawn, not minutes of sympy
    assert scorer.timeouts > timeouts_before
    assert scorer.worker_pid is not None and scorer.worker_pid != pid_before
    assert scorer.score("\\boxed{\\frac{3}{4}}", "0.75", answer_format=fmt) == 1.0


def test_the_timeout_is_per_item_not_per_batch(scorer: Scorer) -> None:
    items = [(f"The final answer is $\\frac{{{i}}}{{{i + 1}}}$.", f"\\frac{{{i}}}{{{i + 1}}}") for i in range(1, 1201)]
    pid_before, timeouts_before = scorer.worker_pid, scorer.timeouts
    started = time.monotonic()
    assert scorer.score_batch(items, timeout_s=0.5) == [1.0] * len(items)
    # The batch outlasts one item's limit several times over (~2 ms an item: 2.5 s on a quiet machine); no item does.
    assert time.monotonic() - started > 0.5
    assert scorer.timeouts == timeouts_before and scorer.worker_pid == pid_before


def test_items_of_both_formats_and_several_timeouts_in_one_batch(scorer: Scorer) -> None:
    timeouts_before = scorer.timeouts
    items = [(PATHOLOGICAL, "1", LATEX), (PAPER_FORMAT, "0.5", LATEX), (PAPER_FORMAT, "0.5", BOXED),
             (PATHOLOGICAL, "1", BOXED), ("", "1", LATEX), ("\\boxed{0.5}", "\\frac12", BOXED)]
    started = time.monotonic()
    assert scorer.score_items(items, timeout_s=1.5) == [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert time.monotonic() - started < 60  # two cut-offs and respawns, not minutes of sympy
    assert scorer.timeouts == timeouts_before + 2


def test_a_batch_larger_than_a_message_is_sent_in_parts(scorer: Scorer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scoring, "MAX_BATCH", 3)
    items = [("\\boxed{1}", "1"), ("\\boxed{2}", "3"), ("\\boxed{3}", "3"), ("\\boxed{4}", "4"),
             (PATHOLOGICAL, "1"), ("\\boxed{6}", "6"), ("\\boxed{7}", "7")]
    assert scorer.score_batch(items, timeout_s=1.5) == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]


def test_an_item_the_worker_dies_on_scores_zero_and_the_rest_of_the_batch_is_scored(scorer: Scorer) -> None:
    """A poison item: the worker dies on it (killed here while it is stuck on the item, as the OOM killer would)."""
    pid = scorer.worker_pid
    assert pid is not None
    restarts_before, timeouts_before = scorer.restarts, scorer.timeouts
    killer = threading.Timer(1.0, os.kill, (pid, signal.SIGKILL))
    killer.start()
    started = time.monotonic()
    try:
        results = scorer.score_batch([("\\boxed{2}", "2"), (PATHOLOGICAL, "1"), ("\\boxed{3}", "3"),
                                      ("\\boxed{4}", "5")], timeout_s=60.0)
    finally:
        killer.cancel()
    assert results == [1.0, 0.0, 1.0, 0.0]
    assert time.monotonic() - started < 30  # not the 60 s timeout: the death is seen at once
    assert scorer.restarts == restarts_before + 1 and scorer.timeouts == timeouts_before
    assert scorer.worker_pid not in (None, pid)


def test_module_level_api() -> None:
    assert scoring.score("\\boxed{10}", "10") == 1.0
    assert scoring.score("\\boxed{11}", "10") == 0.0
    assert scoring.score("The final answer is $10$. I hope it is correct.", "10") == 1.0
    assert scoring.score("The final answer is $10$. I hope it is correct.", "10", answer_format=BOXED) == 0.0
    assert scoring.score_batch([("\\boxed{1}", "1"), ("nope", "1")], timeout_s=5.0) == [1.0, 0.0]
    assert scoring.score_batch([("$1$", "1"), ("\\boxed{1}", "1")], answer_format=BOXED) == [0.0, 1.0]
    assert scoring.score_batch([]) == []


def _paper_reference() -> Callable[[str, str], float]:
    """fairseq2's MathVerifyVerifier, built here from math-verify alone, in this (main) thread."""
    from math_verify.metric import math_metric
    from math_verify.parser import LatexExtractionConfig

    metric = math_metric(gold_extraction_target=(LatexExtractionConfig(),),
                         pred_extraction_target=(LatexExtractionConfig(boxed_match_priority=0),),
                         aggregation_function=max, precision=6)

    def verify_answer(completion: str, answer: str) -> float:
        try:
            grade, _ = metric([answer if answer.startswith("$") else f"${answer}$"], [completion])
        except Exception:  # noqa: BLE001 - as fairseq2
            return 0.0
        return 1.0 if grade == 1 else 0.0

    return verify_answer


def test_latex_mode_scores_math500_solutions_as_the_papers_verifier_does(scorer: Scorer) -> None:
    if not MATH500.is_file():
        pytest.skip("needs ../shared/data/math500.jsonl next to the repository (the shared benchmark data)")
    rows = [json.loads(line) for line in MATH500.read_text(encoding="utf-8").splitlines()[:10]]
    reference = _paper_reference()
    solutions = [(row["solution"], row["answer"]) for row in rows]
    unboxed = [(BOX_ONE_LEVEL.sub(r"\1", solution), answer) for solution, answer in solutions]
    assert scorer.score_batch(solutions, answer_format=LATEX) == [1.0] * len(rows)  # correct by construction
    assert scorer.score_batch(solutions, answer_format=BOXED) == [1.0] * len(rows)
    latex_unboxed = scorer.score_batch(unboxed, answer_format=LATEX)
    assert latex_unboxed == [reference(text, answer) for text, answer in unboxed]
    assert 0 < sum(latex_unboxed) < len(rows)  # some unboxed answers are still found, not all
    no_box = [pair for pair in unboxed if "\\boxed" not in pair[0]]
    assert no_box and scorer.score_batch(no_box, answer_format=BOXED) == [0.0] * len(no_box)
