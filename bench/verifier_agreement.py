"""Benchmark: does semirl's verifier score like the paper's? Scores each of the MATH-500 reference solutions
(which end in `\\boxed{answer}`, mostly with LaTeX answers elsewhere too) against its reference answer with

(a) semirl's verifier in LATEX mode (the worker process with its hard timeout, `semirl.verifier.engine`),
(b) the reference: fairseq2's MathVerifyVerifier config called directly in this process (math-verify's
    `math_metric`, gold `LatexExtractionConfig()` on `$gold$`, prediction
    `LatexExtractionConfig(boxed_match_priority=0)`, max, precision 6; any exception scores 0),
(c) semirl's verifier in BOXED mode,

and reports how many each accepts, the agreement of (a) with (b) and the ids where they differ, and the ids
where the two modes differ. A reference solution is correct by construction, so a rejection is a miss of the
scorer (an answer math-verify cannot parse or compare), not a wrong answer.

It does the same for the solutions with their boxes taken off (`\\boxed{X}` -> `X`): answers as a model that does
not box them writes them, where the LATEX mode must find a LaTeX-delimited answer and BOXED mode finds none.

    python -m bench.verifier_agreement [--data ../shared/data/math500.jsonl] [--timeout-s 5]
                                       [--out bench/results/verifier_agreement.json]

Relative paths are taken from the repository root.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from semirl.core.wire import AnswerFormat
from semirl.verifier.engine import Scorer

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("../shared/data/math500.jsonl")
DEFAULT_OUT = Path("bench/results/verifier_agreement.json")
_BOXED_OPEN = re.compile(r"\\boxed\{")


class Row(BaseModel):
    model_config = ConfigDict(extra="ignore")

    solution: str
    answer: str
    unique_id: str | None = None


class ModeResult(BaseModel):
    accepted: int
    accepted_fraction: float
    seconds: float


class VariantReport(BaseModel):
    latex: ModeResult       # (a)
    reference: ModeResult   # (b)
    boxed: ModeResult       # (c)
    agreement_latex_vs_reference: float
    disagreeing_ids: list[str]
    latex_rejected_ids: list[str]
    latex_only_ids: list[str]   # accepted in LATEX mode, not in BOXED mode
    boxed_only_ids: list[str]   # accepted in BOXED mode, not in LATEX mode


class Report(BaseModel):
    data: str
    items: int
    timeout_s: float
    scorer_timeouts: int      # items semirl's verifier cut off (scored 0) over the whole benchmark
    cpus: int | None
    machine: str
    solution: VariantReport   # the reference solutions as they are
    unboxed: VariantReport    # the same with every \\boxed{X} written as X


Scores = dict[str, tuple[list[float], float]]  # scorer name -> (score per item, seconds)


def load_rows(path: Path) -> list[Row]:
    with path.open(encoding="utf-8") as handle:
        return [Row.model_validate_json(line) for line in handle if line.strip()]


def unbox(text: str) -> str:
    """`text` with each `\\boxed{X}` (outermost, braces balanced) replaced by `X`."""
    out: list[str] = []
    position = 0
    for match in _BOXED_OPEN.finditer(text):
        if match.start() < position:
            continue  # nested in a box already taken off
        closed = _closing_brace(text, match.end() - 1)
        if closed is None:
            continue
        out += [text[position:match.start()], text[match.end():closed]]
        position = closed + 1
    return "".join(out) + text[position:]


def _closing_brace(text: str, opened: int) -> int | None:
    depth = 0
    for index in range(opened, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return index
    return None


def reference_verifier() -> Callable[[str, str], float]:
    """fairseq2's MathVerifyVerifier.verify_answer, standing alone (built here, not from semirl's code)."""
    from math_verify.metric import math_metric
    from math_verify.parser import LatexExtractionConfig

    metric = math_metric(
        gold_extraction_target=(LatexExtractionConfig(),),
        pred_extraction_target=(LatexExtractionConfig(boxed_match_priority=0),),
        aggregation_function=max,
        precision=6,
    )

    def verify_answer(completion: str, answer: str) -> float:
        if not answer.startswith("$"):
            answer = f"${answer}$"
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                grade, _extracted = metric([answer], [completion])
        except Exception:  # noqa: BLE001 - as fairseq2: any failure scores 0
            grade = 0
        return 1.0 if grade == 1 else 0.0

    return verify_answer


def timed(score_all: Callable[[], list[float]]) -> tuple[list[float], float]:
    started = time.perf_counter()
    scores = score_all()
    return scores, time.perf_counter() - started


def score_pairs(scorer: Scorer, reference: Callable[[str, str], float], pairs: list[tuple[str, str]]) -> Scores:
    scores: Scores = {
        mode.value: timed(lambda mode=mode: scorer.score_batch(pairs, answer_format=mode))
        for mode in (AnswerFormat.LATEX, AnswerFormat.BOXED)
    }
    scores["reference"] = timed(lambda: [reference(response, gold) for response, gold in pairs])
    return scores


def mode_result(scores: list[float], seconds: float) -> ModeResult:
    accepted = sum(1 for s in scores if s == 1.0)
    return ModeResult(accepted=accepted, accepted_fraction=accepted / len(scores) if scores else 0.0, seconds=seconds)


def ids_where(ids: list[str], keep: Callable[[int], bool]) -> list[str]:
    return [item for index, item in enumerate(ids) if keep(index)]


def variant_report(ids: list[str], scores: Scores) -> VariantReport:
    latex, reference, boxed = scores["latex"][0], scores["reference"][0], scores["boxed"][0]
    agree = sum(1 for a, b in zip(latex, reference, strict=True) if a == b)
    return VariantReport(
        latex=mode_result(*scores["latex"]),
        reference=mode_result(*scores["reference"]),
        boxed=mode_result(*scores["boxed"]),
        agreement_latex_vs_reference=agree / len(ids) if ids else 1.0,
        disagreeing_ids=ids_where(ids, lambda i: latex[i] != reference[i]),
        latex_rejected_ids=ids_where(ids, lambda i: latex[i] != 1.0),
        latex_only_ids=ids_where(ids, lambda i: latex[i] == 1.0 and boxed[i] != 1.0),
        boxed_only_ids=ids_where(ids, lambda i: boxed[i] == 1.0 and latex[i] != 1.0),
    )


def run(data: Path, data_arg: Path, timeout_s: float) -> Report:
    rows = load_rows(data)
    ids = [row.unique_id or str(index) for index, row in enumerate(rows)]
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    reference = reference_verifier()
    variants: dict[str, VariantReport] = {}
    with Scorer(timeout_s) as scorer:  # started before the clock: the worker's spawn is not scoring time
        for name, text in (("solution", lambda row: row.solution), ("unboxed", lambda row: unbox(row.solution))):
            pairs = [(text(row), row.answer) for row in rows]
            variants[name] = variant_report(ids, score_pairs(scorer, reference, pairs))
    return Report(data=str(data_arg), items=len(rows), timeout_s=timeout_s, scorer_timeouts=scorer.timeouts,
                  cpus=os.cpu_count(),
                  machine=f"{platform.machine()} {platform.processor() or platform.system()}", **variants)


def summary(result: Report) -> str:
    lines = [f"{result.items} MATH-500 reference solutions, {result.cpus} CPUs, timeout {result.timeout_s:g} s"
             f" ({result.scorer_timeouts} cut off)"]
    for variant_name in ("solution", "unboxed"):
        variant: VariantReport = getattr(result, variant_name)
        lines.append(f"{variant_name}:")
        for name in ("latex", "reference", "boxed"):
            mode: ModeResult = getattr(variant, name)
            lines.append(f"  {name:<9} accepted {mode.accepted:>3} ({mode.accepted_fraction:.1%})"
                         f" in {mode.seconds:.1f} s")
        lines.append(f"  LATEX vs reference agreement {variant.agreement_latex_vs_reference:.1%}"
                     f" (differ on {len(variant.disagreeing_ids)}: {variant.disagreeing_ids})")
        lines.append(f"  LATEX-only {len(variant.latex_only_ids)}, BOXED-only {len(variant.boxed_only_ids)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MATH-500 JSONL (problem, solution, answer)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--timeout-s", type=float, default=5.0, help="semirl's hard per-item timeout")
    args = parser.parse_args(argv)

    data = REPO_ROOT / args.data  # an absolute --data stays as it is
    if not data.is_file():
        raise SystemExit(f"no data file at {args.data} (from the repository root): see ../shared/data/README.md")
    result = run(data, args.data, args.timeout_s)
    out = REPO_ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.model_dump(), indent=2) + "\n")
    print(summary(result))


if __name__ == "__main__":
    main()
