"""Benchmark: platform generation against raw vLLM on the same work.

The demo's work (examples/tiny-math-dpo.yaml: 32 prompts x 8 samples, up to 32 tokens, its tiny model) is
generated two ways in the same process, on the same `vllm.LLM` engine, alternating rounds:
- raw: `LLM.generate` of the round's prompts with plain `SamplingParams(n, temperature, top_p, max_tokens)`,
  what a user of vLLM alone would run;
- platform: the round's tasks, built by the controller's own window code, published on the `prompts` stream of
  a real redis-server and served by a real GeneratorWorker (its read/serve loop, protobuf, the forward script)
  until every group is on `to_verify`.
Generated tokens per second of each, and their ratio (platform / raw), median over the rounds.

    python -m bench.generation_throughput [--rounds 5] [--out bench/results/generation_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from semirl.generator.__main__ import apply_cpu_env_defaults

apply_cpu_env_defaults()  # before vLLM is imported, as the generator's entry point does

from semirl.controller.prompt_tasks import build_window_tasks  # noqa: E402
from semirl.core import keys  # noqa: E402
from semirl.core.redis_server import free_port, start_redis  # noqa: E402
from semirl.core.runstate import RunRecord, save_run  # noqa: E402
from semirl.core.streams import publish  # noqa: E402
from semirl.data.problems import load_problems  # noqa: E402
from semirl.generator.__main__ import build_generator  # noqa: E402
from semirl.generator.engine import EngineConfig, engine_prompt  # noqa: E402
from semirl.generator.loop import GeneratorWorker  # noqa: E402
from semirl.generator.messages import prompt_of  # noqa: E402
from semirl.proto import types_pb2  # noqa: E402
from semirl.spec import RunSpec, parse_run_spec  # noqa: E402
from semirl.tinymodel.build import build_tiny_setup  # noqa: E402

DEMO_SPEC = Path("examples/tiny-math-dpo.yaml")


def demo_spec(setup: Any, steps: int) -> RunSpec:
    """The demo's spec, offline (one window, every task on the seed: no reload between rounds)."""
    body = yaml.safe_load(DEMO_SPEC.read_text())
    body["model"]["path"] = str(setup.model_dir.resolve())
    body["data"] = {**body["data"], "train": {"path": str(setup.train_path)}, "eval": []}
    body["sync"] = {"interval": "offline"}
    body["train"]["steps"] = steps
    return parse_run_spec(body)


def raw_round(service: GeneratorWorker, tasks: list[types_pb2.PromptTask]) -> tuple[int, float]:
    from vllm import SamplingParams

    llm = service.engine.engine.llm
    sampling = tasks[0].sampling
    params = SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                            max_tokens=sampling.max_tokens)
    inputs = [engine_prompt(llm.get_tokenizer(), prompt_of(task)) for task in tasks]
    started = time.perf_counter()
    outputs = llm.generate(inputs, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    return sum(len(c.token_ids) for o in outputs for c in o.outputs), seconds


def platform_round(service: GeneratorWorker, tasks: list[types_pb2.PromptTask]) -> tuple[int, float]:
    client = service.client
    before = client.xlen(keys.TO_VERIFY)
    started = time.perf_counter()
    for task in tasks:
        publish(client, keys.PROMPTS, task)
    while client.xlen(keys.TO_VERIFY) < before + len(tasks):
        service.step()
    seconds = time.perf_counter() - started
    groups = [types_pb2.SampleGroup.FromString(fields[b"pb"])
              for _id, fields in client.xrange(keys.TO_VERIFY)[before:]]
    return sum(len(s.token_ids) for g in groups for s in g.samples), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/generation_throughput.json"))
    args = parser.parse_args()

    setup = build_tiny_setup(Path(".semirl/tiny"), seed=0)
    model = str(setup.model_dir.resolve())
    spec = demo_spec(setup, steps=args.rounds + 1)
    problems = load_problems(spec.data.train)
    workdir = Path(tempfile.mkdtemp(prefix="semirl-bench-"))
    redis_server = start_redis(workdir / "redis", append_only=False)
    service = build_generator(redis_server.url, free_port(), "bench-gen", model=model,
                              engine_config=EngineConfig(max_model_len=spec.model.max_model_len))
    record = RunRecord(id="bench-00000000", name="bench", state="running", spec=spec, run_dir=str(workdir))
    save_run(service.client, record)
    rounds: list[dict[str, float]] = []
    try:
        service.start()  # builds the engine on the seed model, as a generator does at start-up
        window = build_window_tasks(record.id, spec, 0, problems, lambda _v: model)
        by_step = [[t for t in window if t.train_step == step] for step in range(1, args.rounds + 2)]
        raw_round(service, by_step[0])  # warm-up
        platform_round(service, by_step[0])
        for index, tasks in enumerate(by_step[1:]):
            raw_tokens, raw_s = raw_round(service, tasks)
            platform_tokens, platform_s = platform_round(service, tasks)
            rounds.append({"raw_tokens_per_s": raw_tokens / raw_s, "raw_s": raw_s,
                           "platform_tokens_per_s": platform_tokens / platform_s, "platform_s": platform_s})
            print(f"round {index}: raw {rounds[-1]['raw_tokens_per_s']:,.0f} tok/s, "
                  f"platform {rounds[-1]['platform_tokens_per_s']:,.0f} tok/s", flush=True)
    finally:
        service.shutdown()
        redis_server.stop()
    ratios = [r["platform_tokens_per_s"] / r["raw_tokens_per_s"] for r in rounds]
    results = {
        "work": {"prompts": spec.train.batch_prompts, "samples_per_prompt": spec.sampling.n,
                 "max_tokens": spec.sampling.max_tokens, "generator_batch": service.batch_size},
        "rounds": rounds,
        "median_ratio_platform_over_raw": statistics.median(ratios),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"platform / raw vLLM generation throughput: {results['median_ratio_platform_over_raw']:.2f}x "
          f"(median of {len(ratios)} rounds) -> {args.out}")


if __name__ == "__main__":
    main()
