"""What `semirl demo` / `semirl run` print at the end and `semirl status RUN --evals` shows: accuracy per set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from semirl.cli import preload_args
from semirl.client import eval_lines, eval_table_lines, summary_lines


def _result(step: int, eval_set: str, accuracy: float, stderr: float | None, failed: int = 0) -> dict[str, Any]:
    return {"step": step, "eval_set": eval_set, "policy_version": step, "accuracy": accuracy, "stderr": stderr,
            "prompts": 40, "samples_per_prompt": 32, "samples_expected": 1280, "samples_scored": 1280 - 32 * failed,
            "failed_prompts": failed, "mean_response_tokens": 9.0}


RECORD = {
    "id": "r-1", "state": "succeeded", "step": 60, "syncs": 14,
    "evals": [_result(0, "math500", 0.474, 0.021), _result(0, "amc23", 0.2, 0.05),
              _result(60, "math500", 0.589, 0.02), _result(60, "amc23", 0.25, None, failed=2)],
}


def test_before_and_after_per_set_with_standard_errors() -> None:
    math500, amc23 = eval_lines(RECORD)
    assert math500.startswith("held-out accuracy on math500: step 0 47.4% ± 2.1 -> step 60 58.9% ± 2.0")
    assert "(+11.5 points, 40 prompts x 32 samples)" in math500
    assert amc23.startswith("held-out accuracy on amc23: step 0 20.0% ± 5.0 -> step 60 25.0% (+5.0 points")
    assert amc23.endswith("2 failed generations counted as wrong)")
    assert summary_lines(RECORD, 12.0)[:3] == [math500, amc23, "run r-1: succeeded"]
    assert eval_lines({"evals": []}) == []


def test_table_has_a_row_per_set_and_step() -> None:
    header, *rows = eval_table_lines(RECORD)
    assert header.split() == ["set", "step", "policy", "accuracy", "prompts", "scored", "failed"]
    assert [row.split()[:2] for row in rows] == [["math500", "0"], ["amc23", "0"], ["math500", "60"], ["amc23", "60"]]
    assert rows[3].split()[-2:] == ["1216/1280", "2"]
    assert eval_table_lines({"evals": []}) == ["no evaluations yet"]


def test_the_demo_builds_its_generators_for_the_demo_model_at_start_up() -> None:
    """`semirl demo` starts generators with the spec's seed model, dtype and context length, so the engine that
    the run's first tasks need is built while the stack starts (an equal config makes that first load a no-op)."""
    spec = Path(__file__).resolve().parents[2] / "examples" / "tiny-math-dpo.yaml"
    args = preload_args(spec)
    assert args == ["--model", str(Path(".semirl/tiny/model").resolve()), "--dtype", "float32",
                    "--max-model-len", "256"]
