"""Benchmark: the verifier service against math-verify called in-process, on the same items, per core.

The items are MATH-500 problems with 8 model-like responses each (one DPO group): three correct (the reference
solution; the same unboxed, ending "The final answer is $answer$. I hope it is correct."; a one-line boxed answer),
three wrong (the solution with another problem's answer boxed, or stated at the end), a solution cut off half way
without its box (truncated at max_tokens: LaTeX but no final answer) and a degenerate repetition with no LaTeX at
all (no answer to parse). They are scored two ways:
- raw: math-verify's `math_metric` with the config the Scorer uses (`paper_metric`, the gold as `$gold$`), item by
  item in this process;
- platform: the round's SampleGroups (token ids as a generator writes them) published on `to_verify` of a real
  redis-server, then a real VerifierService's `step()` loop (its read, the scoring worker process, protobuf, the
  forward script) until every ScoredGroup is on `scored`.
Each round has its own problems (math-verify and sympy cache what they parsed); the two take turns on chunks of
16 groups. Publishing is not timed: it is the generator's work. Both run pinned to one core (the service's
worker process inherits the pin; redis-server, a separate service, is not pinned), so the ratio is per core.
Items per second of each, and their ratio (platform / raw): the median over the rounds, and each round's; also
items per CPU second (the benchmark process, plus the scoring worker for the platform; redis-server's CPU is
reported apart), which other load on a shared box disturbs less than wall time.

    python -m bench.verifier_throughput [--rounds 5] [--prompts 64] [--data ../shared/data/math500.jsonl]
                                        [--out bench/results/verifier_throughput.json]

Relative paths are taken from the repository root.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil

from bench.verifier_agreement import DEFAULT_DATA, REPO_ROOT, Row, unbox
from semirl.core import keys
from semirl.core.redis_server import free_port, start_redis
from semirl.core.runstate import RunRecord, save_run
from semirl.core.streams import PAYLOAD_FIELD, publish
from semirl.proto import types_pb2
from semirl.spec import parse_run_spec
from semirl.verifier.__main__ import build_verifier
from semirl.verifier.engine import gold_text, paper_metric
from semirl.verifier.loop import VerifierWorker

T = TypeVar("T")
DEFAULT_OUT = Path("bench/results/verifier_throughput.json")
SAMPLES_PER_PROMPT = 8
RUN_ID = "bench-verifier"
CHUNK_GROUPS = 16  # what one read of the service takes (VerifierService.batch_size)


class Problem(Row):
    problem: str


def responses(row: Problem, others: list[Problem]) -> list[tuple[str, str]]:
    """Eight distinct responses to `row` with their finish reasons: 3 correct, 3 wrong, a truncated, a degenerate."""
    unboxed = unbox(row.solution)
    return [
        (row.solution, "stop"),
        (f"{unboxed}\n\nThe final answer is ${row.answer}$. I hope it is correct.", "stop"),
        (f"Therefore, the answer is $\\boxed{{{row.answer}}}$.", "stop"),
        (swap_last_box(row.solution, others[0].answer), "stop"),
        (swap_last_box(row.solution, others[1].answer), "stop"),
        (f"{unboxed}\n\nThe final answer is ${others[2].answer}$. I hope it is correct.", "stop"),
        (unbox(row.solution[: len(row.solution) // 2]), "length"),
        ("Let me think about this step by step. " + "we need to consider the " * 40, "length"),
    ]


def swap_last_box(solution: str, answer: str) -> str:
    start = solution.rfind("\\boxed{")
    return solution if start < 0 else f"{solution[:start]}\\boxed{{{answer}}}."


def build_groups(rows: list[Problem], round_index: int) -> list[types_pb2.SampleGroup]:
    groups = []
    for index, row in enumerate(rows):
        task = types_pb2.PromptTask(run_id=RUN_ID, prompt_id=f"round{round_index}-{index}", prompt=row.problem,
                                    gold_answer=row.answer, purpose=types_pb2.TASK_PURPOSE_TRAIN,
                                    reward_source=types_pb2.REWARD_SOURCE_VERIFIER)
        samples = [types_pb2.Sample(text=text, token_ids=fake_tokens(text), finish_reason=finish)
                   for text, finish in responses(row, [rows[(index + k) % len(rows)] for k in (1, 2, 3)])]
        groups.append(types_pb2.SampleGroup(task=task, prompt_token_ids=fake_tokens(row.problem), samples=samples,
                                            policy_version=1, generator_id="bench-gen"))
    return groups


def fake_tokens(text: str) -> list[int]:
    """About a token per 4 characters, as a BPE tokenizer gives for this text (the wire size is what matters)."""
    return [(7919 * i + ord(text[i * 4])) % 151_000 for i in range(len(text) // 4)]


def raw_chunk(groups: list[types_pb2.SampleGroup]) -> list[float]:
    metric = paper_metric()
    rewards = []
    for group in groups:
        gold = gold_text(group.task.gold_answer)
        for sample in group.samples:
            try:
                grade, _ = metric([gold], [sample.text])
            except Exception:  # noqa: BLE001 - as the Scorer: any failure scores 0
                grade = 0
            rewards.append(1.0 if grade == 1 else 0.0)
    return rewards


def publish_chunk(service: VerifierWorker, groups: list[types_pb2.SampleGroup]) -> int:
    """Put the groups on `to_verify`; how many ScoredGroups `scored` will then hold."""
    for group in groups:
        publish(service.client, keys.TO_VERIFY, group)
    return service.client.xlen(keys.SCORED) + len(groups)


def platform_chunk(service: VerifierWorker, scored_target: int) -> None:
    while service.client.xlen(keys.SCORED) < scored_target:
        service.step()


def scored_rewards(service: VerifierWorker, groups: list[types_pb2.SampleGroup]) -> list[float]:
    entries = service.client.xrevrange(keys.SCORED, count=len(groups))
    by_prompt = {s.group.task.prompt_id: list(s.rewards)
                 for s in (types_pb2.ScoredGroup.FromString(fields[PAYLOAD_FIELD]) for _id, fields in entries)}
    return [reward for group in groups for reward in by_prompt[group.task.prompt_id]]


def measured(action: Callable[[], T], processes: list[psutil.Process]) -> tuple[T, float, list[float]]:
    """`action`'s result, wall seconds and the CPU seconds each of `processes` used meanwhile."""
    cpu_before = [cpu_seconds(process) for process in processes]
    started = time.perf_counter()
    result = action()
    wall = time.perf_counter() - started
    return result, wall, [cpu_seconds(process) - before for process, before in zip(processes, cpu_before, strict=True)]


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def pin_to_one_core() -> int:
    core = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def save_running_run(service: VerifierWorker, workdir: Path) -> None:
    spec = parse_run_spec({"name": "bench", "model": {"path": "m"}, "data": {"train": {"path": "t.jsonl"}},
                           "train": {"steps": 1}})
    save_run(service.client, RunRecord(id=RUN_ID, name="bench", state="running", spec=spec, run_dir=str(workdir)))


def run(data: Path, data_arg: Path, prompts: int, rounds_wanted: int) -> dict:
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    lines = [line for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [Problem.model_validate_json(line) for line in lines]
    if len(rows) < prompts * (rounds_wanted + 1):
        raise SystemExit(f"{len(rows)} problems: too few for {rounds_wanted} + 1 rounds of {prompts} different ones")
    workdir = Path(tempfile.mkdtemp(prefix="semirl-bench-"))
    redis_server = start_redis(workdir / "redis", append_only=False)
    redis_process = psutil.Process(redis_server.process.pid)
    core = pin_to_one_core()  # after redis-server started: only this process and the scoring worker
    service = build_verifier(redis_server.url, free_port(), "bench-ver")
    rounds: list[dict[str, float]] = []
    try:
        save_running_run(service, workdir)
        service.start()
        this = psutil.Process()
        for index in range(rounds_wanted + 1):  # round 0 warms both up and is not counted
            groups = build_groups(rows[index * prompts:(index + 1) * prompts], index)
            totals = dict.fromkeys(("raw_s", "raw_cpu_s", "platform_s", "platform_cpu_s",
                                    "service_cpu_s", "redis_cpu_s"), 0.0)
            raw_rewards: list[float] = []
            platform_rewards: list[float] = []
            # Chunk by chunk, alternating which goes first: a load change on the shared box hits both alike.
            for start in range(0, len(groups), CHUNK_GROUPS):
                chunk = groups[start:start + CHUNK_GROUPS]
                for side in (("raw", "platform") if (index + start // CHUNK_GROUPS) % 2 else ("platform", "raw")):
                    if side == "raw":
                        rewards, wall, (cpu,) = measured(lambda chunk=chunk: raw_chunk(chunk), [this])
                        raw_rewards += rewards
                        totals["raw_s"] += wall
                        totals["raw_cpu_s"] += cpu
                    else:
                        target = publish_chunk(service, chunk)
                        worker = psutil.Process(service.scorer.worker_pid)
                        _, wall, (service_cpu, worker_cpu, redis_cpu) = measured(
                            lambda target=target: platform_chunk(service, target), [this, worker, redis_process])
                        platform_rewards += scored_rewards(service, chunk)
                        totals["platform_s"] += wall
                        totals["platform_cpu_s"] += service_cpu + worker_cpu
                        totals["service_cpu_s"] += service_cpu
                        totals["redis_cpu_s"] += redis_cpu
            if platform_rewards != raw_rewards:
                raise SystemExit(f"round {index}: the service scored differently from math-verify in-process")
            if index == 0:
                continue
            items = len(raw_rewards)
            rounds.append({**totals, "raw_items_per_s": items / totals["raw_s"],
                           "platform_items_per_s": items / totals["platform_s"],
                           "ratio": totals["raw_s"] / totals["platform_s"],
                           "cpu_ratio": totals["raw_cpu_s"] / totals["platform_cpu_s"]})
            print(f"round {index}: raw {rounds[-1]['raw_items_per_s']:,.1f} items/s, platform "
                  f"{rounds[-1]['platform_items_per_s']:,.1f} items/s, ratio {rounds[-1]['ratio']:.3f} "
                  f"(per CPU second {rounds[-1]['cpu_ratio']:.3f})", flush=True)
    finally:
        service.shutdown()
        redis_server.stop()
    items = prompts * SAMPLES_PER_PROMPT
    ratios = [r["ratio"] for r in rounds]
    cpu_ratios = [r["cpu_ratio"] for r in rounds]
    return {
        "data": str(data_arg),
        "work": {"prompts": prompts, "samples_per_prompt": SAMPLES_PER_PROMPT,
                 "items": items, "verifier_batch": service.batch_size,
                 "correct_fraction": sum(raw_rewards) / len(raw_rewards)},
        "pinned_core": core,
        "cpus": os.cpu_count(),
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        "scorer_timeouts": service.scorer.timeouts,
        "rounds": rounds,
        "median_raw_items_per_s": statistics.median(r["raw_items_per_s"] for r in rounds),
        "median_platform_items_per_s": statistics.median(r["platform_items_per_s"] for r in rounds),
        "median_ratio_platform_over_raw": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "median_cpu_ratio_platform_over_raw": statistics.median(cpu_ratios),
        "cpu_ratio_range": [min(cpu_ratios), max(cpu_ratios)],
        # The service process's own CPU (read, protobuf, Redis, talking to the worker) per item scored.
        "median_service_cpu_ms_per_item": statistics.median(r["service_cpu_s"] for r in rounds) * 1000 / items,
        "median_redis_cpu_ms_per_item": statistics.median(r["redis_cpu_s"] for r in rounds) * 1000 / items,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MATH-500 JSONL (problem, solution, answer)")
    parser.add_argument("--prompts", type=int, default=64, help="prompts per round (8 samples each)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    data = REPO_ROOT / args.data  # an absolute --data stays as it is
    if not data.is_file():
        raise SystemExit(f"no data file at {args.data} (from the repository root): see ../shared/data/README.md")
    results = run(data, args.data, args.prompts, args.rounds)
    out = REPO_ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    low, high = results["ratio_range"]
    cpu_low, cpu_high = results["cpu_ratio_range"]
    print(f"platform / in-process math-verify, per core: {results['median_ratio_platform_over_raw']:.3f}x items/s "
          f"(median of {len(results['rounds'])} rounds, {low:.3f}-{high:.3f}); items per CPU second "
          f"{results['median_cpu_ratio_platform_over_raw']:.3f}x ({cpu_low:.3f}-{cpu_high:.3f}); service process "
          f"{results['median_service_cpu_ms_per_item']:.3f} ms CPU per item -> {args.out}")


if __name__ == "__main__":
    main()
