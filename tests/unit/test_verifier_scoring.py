"""math-verify scoring in a worker process with a hard per-item timeout (real math-verify, no mocks)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from semirl.verifier import scoring
from semirl.verifier.scoring import Scorer, score_in_process

# sympy evaluates this power tower exactly: minutes of C-level big-integer work that SIGALRM cannot stop.
PATHOLOGICAL = "The answer is \\boxed{9^{9^{9^{9^{9}}}}}"


@pytest.fixture(scope="module")
def scorer() -> Iterator[Scorer]:
    with Scorer(timeout_s=3.0) as instance:
        yield instance


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        ("So the answer is $\\boxed{42}$.", "42"),
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("\\boxed{0.5}", "\\frac12"),
        ("\\boxed{\\frac12}", "1/2"),
        ("\\boxed{1/2}", "\\frac{1}{2}"),
        ("Thus $x = \\boxed{2\\sqrt{2}}$", "\\sqrt{8}"),
        ("\\boxed{(1, 2)}", "(1,2)"),
        ("First 7, then \\boxed{3}", "3"),
    ],
)
def test_correct_and_equivalent_forms_score_one(scorer: Scorer, response: str, gold: str) -> None:
    assert scorer.score(response, gold) == 1.0


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        ("\\boxed{41}", "42"),
        ("\\boxed{0.51}", "\\frac12"),
        ("The answer is 42.", "42"),               # no boxed answer: unparsable by contract
        ("\\boxed{}", "42"),
        ("", "42"),
        ("\\boxed{42}", ""),
        ("garbage }{ \\boxed{ ((( ", "1"),
        ("\\boxed{" + "(" * 5000 + "}", "1"),
        ("x" * 2_000_000 + "\\boxed{7}" + "y" * 1000, "8"),
        ("答案是 \\boxed{三} 🙂\u0000\udcff", "3"),
        ("\\boxed{\\frac{1}{0}}", "1"),
    ],
)
def test_wrong_garbage_empty_huge_unicode_score_zero(scorer: Scorer, response: str, gold: str) -> None:
    assert scorer.score(response, gold) == 0.0


def test_non_strings_never_raise(scorer: Scorer) -> None:
    assert scorer.score(None, "1") == 0.0  # type: ignore[arg-type]
    assert scorer.score("\\boxed{1}", 1) == 0.0  # type: ignore[arg-type]
    assert score_in_process(b"\\boxed{1}", "1") == 0.0  # type: ignore[arg-type]


def test_pathological_input_is_cut_off_and_worker_keeps_serving(scorer: Scorer) -> None:
    pid_before = scorer.worker_pid
    started = time.monotonic()
    results = scorer.score_batch(
        [("\\boxed{2}", "2"), (PATHOLOGICAL, "1"), ("\\boxed{3}", "3"), ("\\boxed{4}", "5")], timeout_s=2.0
    )
    elapsed = time.monotonic() - started
    assert results == [1.0, 0.0, 1.0, 0.0]
    assert elapsed < 30, elapsed  # 2 s limit + one worker respawn, not minutes of sympy
    assert scorer.timeouts >= 1
    assert scorer.worker_pid is not None and scorer.worker_pid != pid_before
    assert scorer.score("\\boxed{\\frac{3}{4}}", "0.75") == 1.0


def test_module_level_api() -> None:
    assert scoring.score("\\boxed{10}", "10") == 1.0
    assert scoring.score("\\boxed{11}", "10") == 0.0
    assert scoring.score_batch([("\\boxed{1}", "1"), ("nope", "1")], timeout_s=5.0) == [1.0, 0.0]
    assert scoring.score_batch([]) == []
