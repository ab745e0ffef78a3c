"""`python -m semirl.data`: public datasets into the run spec's problem JSONL, on real rows (the evaluation sets
in ../shared/data when they are beside the repository) and on rows in each source's published schema."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as parquet
import pytest

from semirl.data.__main__ import main
from semirl.data.prepare import prepare
from semirl.data.problems import load_problems
from semirl.data.sources import last_boxed
from semirl.spec import DatasetSpec

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
MATH500_FIRST = ("Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.  Enter your answer in "
                 "the form $(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$")


def _numina_rows() -> list[dict]:
    """NuminaMath-CoT rows (problem, solution, source) and NuminaMath-1.5 ones (answer, question_type)."""
    return [
        {"source": "olympiads", "problem": "Compute $\\frac{1}{2}+\\frac{1}{4}$.",
         "solution": "We add: $\\frac{2}{4}+\\frac{1}{4}=\\boxed{\\frac{3}{4}}$."},
        {"source": "amc_aime", "problem": "Which is largest? (A) 1 (B) 2", "solution": "So $\\boxed{\\textbf{(B)}}$"},
        {"source": "cn_k12", "problem": "Prove that $\\sqrt 2$ is irrational.", "solution": "Suppose ... done.",
         "answer": "proof", "question_type": "proof"},
        {"source": "synthetic_math", "problem": "Find $x$ if $2x=10$.", "solution": "x is five", "answer": "5",
         "question_type": "math-word-problem"},
        {"source": "synthetic_math", "problem": "FIND  $x$ if $2x=10$.", "solution": "$\\boxed{5}$"},  # duplicate
        {"source": "orca_math", "problem": "What is 7 squared?", "solution": "It is 49."},  # no final answer
        {"source": "math", "problem": MATH500_FIRST.upper(), "solution": "$\\boxed{(3,\\frac{\\pi}{2})}$"},
    ]


def test_boxed_answers_keep_nested_braces() -> None:
    assert last_boxed("a $\\boxed{1}$ then $\\boxed{\\frac{3}{4}}$.") == "\\frac{3}{4}"
    assert last_boxed("\\fbox{x^{2}}") == "x^{2}"
    assert last_boxed("no box") is None and last_boxed("\\boxed{unclosed") is None


def test_numinamath_parquet_becomes_verifiable_decontaminated_problems(tmp_path: Path) -> None:
    source = tmp_path / "numina" / "train-00000-of-00001.parquet"
    source.parent.mkdir()
    rows = _numina_rows()
    columns = sorted({key for row in rows for key in row})
    parquet.write_table(pa.Table.from_pylist([{key: row.get(key) for key in columns} for row in rows]), source)
    evals = tmp_path / "math500.jsonl"
    evals.write_text(json.dumps({"problem": MATH500_FIRST, "answer": "\\left( 3, \\frac{\\pi}{2} \\right)"}) + "\n")

    summary = prepare("numinamath", str(source.parent), tmp_path / "out" / "numinamath.jsonl", exclude=[evals])
    assert (summary.read, summary.written) == (7, 2)
    assert summary.dropped == {"multiple-choice letter": 1, "question type proof": 1, "duplicate": 1,
                               "no final answer": 1, "in an evaluation set": 1}
    problems = load_problems(DatasetSpec(path=str(tmp_path / "out" / "numinamath.jsonl")))
    assert [(p.problem, p.answer) for p in problems] == [
        ("Compute $\\frac{1}{2}+\\frac{1}{4}$.", "\\frac{3}{4}"), ("Find $x$ if $2x=10$.", "5")]
    assert not list((tmp_path / "out").glob(".numinamath.jsonl.*"))  # the temporary file was renamed


def test_wildchat_gives_first_user_turns_without_answers(tmp_path: Path) -> None:
    rows = [
        {"conversation_hash": "a1", "language": "English", "toxic": False, "redacted": False,
         "conversation": [{"role": "user", "content": "Write a haiku about rain."},
                          {"role": "assistant", "content": "Soft rain..."}]},
        {"conversation_hash": "b2", "language": "French", "toxic": False,
         "conversation": [{"role": "user", "content": "Bonjour"}]},
        {"conversation_hash": "c3", "language": "English", "toxic": True,
         "conversation": [{"role": "user", "content": "..."}]},
    ]
    source = tmp_path / "wildchat.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = prepare("wildchat", str(source), tmp_path / "prompts.jsonl")
    assert summary.written == 1 and summary.dropped == {"not English": 1, "toxic or redacted": 1}
    (row,) = [json.loads(line) for line in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    assert row == {"id": "a1", "problem": "Write a haiku about rain.", "answer": "", "source": "wildchat",
                   "reward_source": "reward_model"}


def test_the_command_reports_bad_input_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--source", "gsm8k", "--input", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    assert main(["--source", "gsm8k", "--input", str(empty), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.skipif(not SHARED.is_dir(), reason="the evaluation sets in ../shared/data are not beside the repo")
@pytest.mark.parametrize(("source", "file", "rows", "first_answer"), [
    ("math500", "math500.jsonl", 500, "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("amc23", "amc23.jsonl", 40, "27"),
    ("gsm8k", "gsm8k_test.jsonl", 1319, "18"),
])
def test_the_shared_evaluation_sets_prepare_whole(tmp_path: Path, source: str, file: str, rows: int,
                                                  first_answer: str) -> None:
    out = tmp_path / f"{source}.jsonl"
    assert main(["--source", source, "--input", str(SHARED / file), "--out", str(out)]) == 0
    problems = load_problems(DatasetSpec(path=str(out)))
    assert len(problems) == rows and problems[0].answer == first_answer
    if source == "gsm8k":
        assert all(p.answer.lstrip("-").replace(".", "", 1).isdigit() for p in problems)


@pytest.mark.skipif(not SHARED.is_dir(), reason="the evaluation sets in ../shared/data are not beside the repo")
def test_training_data_excludes_every_evaluation_problem(tmp_path: Path) -> None:
    """A training set assembled from rows that include MATH-500 problems keeps none of them."""
    math500 = [json.loads(line) for line in (SHARED / "math500.jsonl").read_text().splitlines()]
    rows = [{"problem": r["problem"], "solution": r["solution"]} for r in math500[:50]]
    rows.append({"problem": "A fresh problem: 2+2?", "solution": "$\\boxed{4}$"})
    source = tmp_path / "mixed.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = prepare("numinamath", str(source), tmp_path / "train.jsonl", exclude=[SHARED / "math500.jsonl"])
    assert summary.written == 1 and summary.dropped == {"in an evaluation set": 50}
