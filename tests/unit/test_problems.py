"""The synthetic task: deterministic, train/eval disjoint (by unordered operands), answers and worked responses
correct."""

from __future__ import annotations

import json
import re

import pytest

from semirl.data.problems import load_problems
from semirl.data.synthetic import (
    MAX_OPERAND,
    expression_of,
    make_problems,
    operand_set,
    reference_response,
    split_of,
    write_jsonl,
)
from semirl.spec import DatasetSpec

_PROMPT = re.compile(r"^Q: (\d{1,2})\+(\d{1,2})=\?\nA:$")


def test_same_seed_same_problems_other_seed_other_order() -> None:
    assert make_problems(200, seed=3) == make_problems(200, seed=3)
    assert make_problems(200, seed=3) != make_problems(200, seed=4)
    assert make_problems(50, seed=3, split="eval") == make_problems(50, seed=3, split="eval")


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_train_and_eval_never_overlap(seed: int) -> None:
    train = {row["problem"] for row in make_problems(7900, seed, "train")}
    evals = {row["problem"] for row in make_problems(2000, seed + 1, "eval")}
    assert len(train) == 7900 and len(evals) == 2000
    assert not train & evals


def test_swapped_twins_always_share_a_split() -> None:
    operands = range(MAX_OPERAND + 1)
    splits = {f"{a}+{b}": split_of(f"{a}+{b}") for a in operands for b in operands}
    assert all(split == splits[f"{b}+{a}"] for expr, split in splits.items() for a, b in [expr.split("+")])
    share = sum(split == "eval" for split in splits.values()) / len(splits)
    assert 0.18 < share < 0.22  # about one problem in five is held out


@pytest.mark.parametrize("seed", [0, 3])
def test_no_eval_operand_set_appears_in_train(seed: int) -> None:
    # Every train problem that exists (7937) against every eval problem (2063): not one shared {a, b}.
    train = {operand_set(expression_of(row["problem"])) for row in make_problems(7937, seed, "train")}
    evals = {operand_set(expression_of(row["problem"])) for row in make_problems(2063, seed, "eval")}
    assert len(evals) > 1000 and not train & evals
    # Both orders of an eval set are held out, so an eval problem's swapped twin is an eval problem too.
    eval_problems = {expression_of(row["problem"]) for row in make_problems(2063, seed, "eval")}
    assert {f"{b}+{a}" for a, b in (expr.split("+") for expr in eval_problems)} == eval_problems


def test_answers_and_worked_responses_are_correct() -> None:
    for row in make_problems(500, seed=0) + make_problems(200, seed=0, split="eval"):
        match = _PROMPT.match(row["problem"])
        assert match, row["problem"]
        a, b = int(match.group(1)), int(match.group(2))
        assert row["answer"] == str(a + b)
        response = reference_response(row)
        assert response.endswith(f"\\boxed{{{a + b}}}")
        assert expression_of(row["problem"]) == f"{a}+{b}"


def test_too_many_problems_is_an_error() -> None:
    with pytest.raises(ValueError, match="eval problems exist"):
        make_problems(10_000, seed=0, split="eval")


def test_jsonl_round_trips_through_the_dataset_loader(tmp_path) -> None:
    rows = make_problems(20, seed=5)
    path = write_jsonl(rows, tmp_path / "data" / "train.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    problems = load_problems(DatasetSpec(path=str(path)))
    assert [(p.problem, p.answer) for p in problems] == [(r["problem"], r["answer"]) for r in rows]


def test_a_row_may_name_its_own_reward_source(tmp_path) -> None:
    """Mixed tasks: a dataset-level default, overridden per row; reward-model rows need no answer."""
    path = tmp_path / "mixed.jsonl"
    rows = [{"problem": "1+1?", "answer": "2"}, {"problem": "Write a haiku.", "reward_source": "reward_model"},
            {"problem": "2+2?", "answer": "4", "reward_source": "verifier"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    problems = load_problems(DatasetSpec(path=str(path)))
    assert [(p.reward_source, p.answer) for p in problems] == [("verifier", "2"), ("reward_model", ""),
                                                               ("verifier", "4")]
    scored_by_rm = load_problems(DatasetSpec(path=str(path), reward_source="reward_model"))
    assert [p.reward_source for p in scored_by_rm] == ["reward_model", "reward_model", "verifier"]
    path.write_text(json.dumps({"problem": "x", "reward_source": "judge"}) + "\n")
    with pytest.raises(ValueError, match="reward_source"):
        load_problems(DatasetSpec(path=str(path)))
    path.write_text(json.dumps({"problem": "x"}) + "\n")
    with pytest.raises(ValueError, match="needs fields"):
        load_problems(DatasetSpec(path=str(path)))  # a verifier row without an answer
