"""Benchmark: the reward-model service against a direct in-process `transformers` forward, on the same items.

Items: the tiny task's held-out prompts, 8 responses each (the reference answer, the forgotten-carry one, and
variants the tiny reward model was built to tell apart: digits turned to 7, repeats, truncations). Scored two ways
on the tiny reward model (`semirl tiny-model --reward-model`, or --model for any one-label classifier):
- raw: `AutoModelForSequenceClassification` in this process, the chat template applied per (prompt, response),
  rows right-padded in batches of 64 and HF's own pooling (`outputs.logits`), under `torch.inference_mode`;
- platform: the groups published on `to_reward` of a real redis-server, then a real RewardService's `step()` loop
  (its read, the engine's token-budget batches, protobuf, the forwarding script) until every ScoredGroup is on
  `scored`. Publishing is not timed (it is the generator's work).
Rounds alternate; items per second of each and their ratio (platform / raw), median over rounds; scores are
checked equal (to 1e-4) so both did the same work.

    python -m bench.reward_throughput [--rounds 5] [--prompts 64] [--out bench/results/reward_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from semirl.core import keys
from semirl.core.redis_server import free_port, start_redis
from semirl.core.runstate import RunRecord, save_run
from semirl.core.streams import PAYLOAD_FIELD, publish
from semirl.data.synthetic import expression_of, make_problems, reference_response, wrong_response
from semirl.proto import types_pb2
from semirl.reward.__main__ import build_reward
from semirl.reward.engine import RewardEngineConfig
from semirl.reward.loop import RewardWorker
from semirl.spec import parse_run_spec
from semirl.tinymodel.reward_model import perturb

RUN_ID = "bench-reward"
RAW_BATCH = 64


def build_groups(round_index: int, prompts: int) -> list[types_pb2.SampleGroup]:
    rng = random.Random(round_index)
    rows = make_problems(prompts, seed=100 + round_index, split="eval")
    groups = []
    for index, row in enumerate(rows):
        reference, wrong = reference_response(row), wrong_response(expression_of(row["problem"]))
        texts = [reference, wrong, *(perturb(rng.choice([reference, wrong]), rng) for _ in range(6))]
        task = types_pb2.PromptTask(run_id=RUN_ID, prompt_id=f"round{round_index}-{index}", prompt=row["problem"],
                                    purpose=types_pb2.TASK_PURPOSE_TRAIN,
                                    reward_source=types_pb2.REWARD_SOURCE_REWARD_MODEL)
        groups.append(types_pb2.SampleGroup(task=task, samples=[types_pb2.Sample(text=t, token_ids=[1]) for t in texts],
                                            policy_version=1, generator_id="bench-gen"))
    return groups


def raw_scores(model: torch.nn.Module, tokenizer, groups: list[types_pb2.SampleGroup]) -> list[float]:  # noqa: ANN001
    rows = [list(tokenizer.apply_chat_template([{"role": "user", "content": g.task.prompt},
                                                {"role": "assistant", "content": s.text}],
                                               tokenize=True, add_generation_prompt=False, return_dict=False))
            for g in groups for s in g.samples]
    scores = []
    with torch.inference_mode():
        for start in range(0, len(rows), RAW_BATCH):
            chunk = rows[start:start + RAW_BATCH]
            width = max(len(r) for r in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, row in enumerate(chunk):
                ids[i, :len(row)] = torch.tensor(row)
                mask[i, :len(row)] = 1
            scores.extend(model(input_ids=ids, attention_mask=mask).logits[:, 0].float().tolist())
    return scores


def platform_scores(service: RewardWorker, groups: list[types_pb2.SampleGroup]) -> tuple[list[float], float]:
    target = service.client.xlen(keys.SCORED) + len(groups)
    for group in groups:
        publish(service.client, keys.TO_REWARD, group)
    started = time.perf_counter()
    while service.client.xlen(keys.SCORED) < target:
        service.step()
    seconds = time.perf_counter() - started
    entries = service.client.xrevrange(keys.SCORED, count=len(groups))
    by_prompt = {s.group.task.prompt_id: list(s.rewards)
                 for s in (types_pb2.ScoredGroup.FromString(f[PAYLOAD_FIELD]) for _id, f in entries)}
    return [r for g in groups for r in by_prompt[g.task.prompt_id]], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path(".semirl/tiny/reward_model"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench/results/reward_throughput.json"))
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"{args.model}: no model; run `semirl tiny-model --reward-model` first")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, dtype=torch.float32).eval()
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = start_redis(Path(tmp) / "redis")
        service = build_reward(redis_server.url, free_port(), "bench-rm",
                              RewardEngineConfig(model_path=str(args.model), device="cpu"), batch_size=16)
        spec = parse_run_spec({"name": "bench", "model": {"path": str(args.model)},
                               "data": {"train": {"path": "unused.jsonl"}}, "train": {"steps": 1}})
        save_run(service.client, RunRecord(id=RUN_ID, name="bench", state="running", spec=spec, run_dir=tmp))
        service.client.set(keys.ACTIVE_RUN, RUN_ID)
        rounds = []
        try:
            for index in range(args.rounds):
                groups = build_groups(index, args.prompts)
                items = sum(len(g.samples) for g in groups)
                started = time.perf_counter()
                raw = raw_scores(model, tokenizer, groups)
                raw_s = time.perf_counter() - started
                served, platform_s = platform_scores(service, groups)
                assert max(abs(a - b) for a, b in zip(raw, served, strict=True)) < 1e-4, "the two disagree"
                rounds.append({"items": items, "raw_items_per_s": items / raw_s,
                               "platform_items_per_s": items / platform_s, "ratio": raw_s / platform_s})
                print(json.dumps(rounds[-1]), flush=True)
        finally:
            service.shutdown()
            redis_server.stop()
    summary = {"date": time.strftime("%Y-%m-%d"),
               "machine": f"{os.cpu_count()}-core CPU machine ({platform.machine()}), shared, noisy",
               "model": str(args.model), "prompts": args.prompts, "rounds": rounds,
               "ratio_median": statistics.median(r["ratio"] for r in rounds),
               "load_avg": [round(x, 2) for x in os.getloadavg()]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"platform / raw items per second: {summary['ratio_median']:.2f} (median of {len(rounds)} rounds)")


if __name__ == "__main__":
    main()
