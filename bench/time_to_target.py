"""Benchmark: seconds from the command's start to the seed's held-out accuracy + 10 and + 30 points, `semirl demo`
against TRL's online DPO and GRPO (bench/trl_peer.py) on the same box, model, prompts, reward and evaluation.

    bash bench/trl_env.sh                        # once: TRL's own environment, .venv-trl
    .venv/bin/python -m bench.time_to_target     # semirl, then TRL online DPO, then TRL GRPO, one after another

semirl: the demo spec (examples/tiny-math-dpo.yaml, or --spec) on the local stack, as `semirl demo` runs it (the
tiny setup, then Redis, controller, generator with its engine built at start-up, verifier, trainer), timed from
this process's start, so the stack's start-up counts. semirl-warm (--systems): the same run on a stack started as
`semirl up` starts it (generators without a preloaded model), timed from the run's submission once the stack is
up: what a run costs on a platform whose services outlive runs (a cluster). A point's time is when the evaluated
policy version was committed: the controller's receipt of that step's report plus the trainer's policy write and
commit (reported with the next step). Evaluation, by default (--semirl-eval after), is TRL's exactly: semirl trains
with no evaluation rounds, keeps every version, and afterwards the evaluated steps' versions are scored by the
peer's own evaluator (`bench.trl_peer.held_out_accuracy`: HF sampling, math-verify), so neither clock includes
evaluation.
With --semirl-eval platform, semirl's own evaluation rounds (vLLM, every eval step) run during training, share
its generator and count on its clock.

Targets are each run's own step-0 accuracy + 10 / + 30 points (same protocol: 200 held-out prompts x 4 samples,
math-verify). Writes one JSON per system and bench/results/time_to_target.json (all three, the table, and the
ratio semirl / TRL of each time), and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from bench.trl_peer import TARGET_POINTS, TRAINERS, PeerParams, format_seconds, process_start, result
from semirl.cli import preload_args
from semirl.client import ControllerClient
from semirl.core.redis_server import free_port
from semirl.local.stack import LocalStack
from semirl.spec import RunSpec, parse_run_spec
from semirl.tinymodel.build import build_tiny_setup

DEMO_SPEC = Path("examples/tiny-math-dpo.yaml")
TRL_PYTHON = Path(".venv-trl/bin/python")


def peer_params(spec: RunSpec) -> PeerParams:
    """What TRL runs: the spec's model, data, sampling, optimizer and evaluation, resolved with its defaults."""
    eval_set = spec.data.eval[0]
    limits = [limit for limit in (eval_set.limit, spec.eval.limit) if limit]
    return PeerParams(
        model_dir=spec.model.path, train_path=spec.data.train.path, eval_path=eval_set.path,
        eval_limit=min(limits) if limits else None, prompt_template=spec.data.prompt_template,
        n=spec.sampling.n, temperature=spec.sampling.temperature, top_p=spec.sampling.top_p,
        max_tokens=spec.sampling.max_tokens, eval_samples=eval_set.samples_per_prompt or spec.eval.samples_per_prompt,
        eval_temperature=spec.eval.temperature, eval_top_p=spec.eval.top_p, eval_max_tokens=spec.eval_max_tokens,
        lr=spec.optim.lr, adam_eps=spec.optim.adam_eps, betas=spec.optim.betas, weight_decay=spec.optim.weight_decay,
        grad_clip=spec.optim.grad_clip, warmup_steps=spec.optim.warmup_steps, dpo_beta=spec.dpo.beta,
        grpo_kl_beta=spec.grpo.kl_beta, grpo_clip_eps=spec.grpo.clip_eps, grpo_std_normalize=spec.grpo.std_normalize,
        grpo_length_normalize=spec.grpo.length_normalize,
        batch_prompts=spec.train.batch_prompts, steps=spec.train.steps, seed=spec.train.seed,
        eval_every=spec.eval.every or spec.train.steps,
    )


def semirl_curve(record: dict[str, Any], metrics: list[dict[str, Any]], started: float) -> list[dict[str, Any]]:
    """(step, seconds, accuracy) of each evaluation, timed at the commit of the policy version it evaluated."""
    by_step = {int(m["step"]): m for m in metrics if "step" in m}

    def committed(version: int) -> float:
        report = by_step[version]
        after = by_step.get(version + 1, {})
        return float(report["time"]) + float(after.get("checkpoint_policy_s", 0.0)) + float(
            after.get("checkpoint_commit_s", 0.0))

    curve = []
    for evaluation in sorted(record["evals"], key=lambda e: e["step"]):
        version = int(evaluation["policy_version"])
        at = float(record["created_at"]) if version == 0 else committed(version)
        curve.append({"step": int(evaluation["step"]), "policy_version": version,
                      "seconds": round(at - started, 3), "accuracy": float(evaluation["accuracy"]),
                      "stderr": evaluation.get("stderr")})
    return curve


def run_semirl(spec_data: dict[str, Any], workdir: Path, started: float, params: PeerParams,
               eval_after: bool, *, warm: bool = False) -> dict[str, Any]:
    """`eval_after`: train with no evaluation rounds, keep every version, then evaluate the evaluated steps' versions
    with the peer's own evaluator (HF sampling + math-verify) — TRL's protocol exactly, with the clock stopped.
    `warm`: the clock starts when the run is submitted to a stack that is already up, started as `semirl up` starts
    it (no model preloaded: the run's engine is built when its first tasks arrive), not at this process's start."""
    load_before = os.getloadavg()
    build_tiny_setup(Path(".semirl/tiny"), seed=0)
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / "time-to-target.yaml"
    if eval_after:
        spec_data = {**spec_data, "data": {**spec_data["data"], "eval": []},
                     "eval": {k: v for k, v in spec_data["eval"].items() if k != "every"},
                     "checkpoint": {**spec_data.get("checkpoint", {}), "keep": spec_data["train"]["steps"]}}
    spec_path.write_text(yaml.safe_dump(spec_data))
    with LocalStack(workdir=workdir, store=(workdir / "store").resolve(), http_port=free_port(),
                    generator_args=[] if warm else preload_args(spec_path)) as stack:
        client = ControllerClient(stack.url)
        if warm:
            started = time.time()
        run_id = client.submit(spec_path)["id"]
        record = client.wait(run_id, timeout=3600)
        wall = time.time() - started
        if record["state"] != "succeeded":
            raise SystemExit(f"semirl run failed: {record.get('error')}")
        metrics = client.metrics(run_id)
    if eval_after:
        record["evals"] = evaluate_versions(record, params)
    curve = semirl_curve(record, metrics, started)
    engine_env = {name: value for name, value in os.environ.items() if name.startswith("SEMIRL_VLLM_")}
    return result("semirl-warm" if warm else "semirl", curve, round(wall, 3), load_before=list(load_before),
                  syncs=record.get("syncs"), generation="vLLM (CPU build) through the local stack",
                  engine_env=engine_env, spec=spec_data)


def evaluate_versions(record: dict[str, Any], params: PeerParams) -> list[dict[str, Any]]:
    """Each evaluated step's committed version (the seed for step 0) scored by the peer's evaluator."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.trl_peer import _rows, held_out_accuracy

    tokenizer = AutoTokenizer.from_pretrained(params.model_dir)
    rows = _rows(params.eval_path, params.eval_limit)
    steps = sorted({0, params.steps, *range(params.eval_every, params.steps, params.eval_every)})
    evals = []
    for step in steps:
        path = params.model_dir if step == 0 else str(Path(record["run_dir"]) / "policy" / f"v{step}")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        evals.append({"step": step, "policy_version": step, "accuracy": held_out_accuracy(model, tokenizer, params,
                                                                                        rows), "stderr": None})
        print(f"semirl step {step:>3}: accuracy {evals[-1]['accuracy']:.3f}", flush=True)
    return evals


def run_trl(trainer: str, params_path: Path, out: Path, python: Path) -> dict[str, Any]:
    if not python.is_file():
        raise SystemExit(f"{python} is missing: run `bash bench/trl_env.sh` first")
    load_before = os.getloadavg()
    subprocess.run([str(python), "-m", "bench.trl_peer", "--trainer", trainer, "--params", str(params_path),
                    "--out", str(out)], check=True)
    return {**json.loads(out.read_text()), "load_before": list(load_before)}


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    head = ["system", "seed", *(f"to seed + {p} points" for p in TARGET_POINTS), "final", "wall", "load before"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results.items():
        cells = [name, f"{res['seed_accuracy']:.1%}",
                 *(format_seconds(res["targets"][f"seed+{p}"]["seconds"]) for p in TARGET_POINTS),
                 f"{res['final_accuracy']:.1%}", f"{res['wall_s']:.0f} s",
                 f"{res.get('load_before', [float('nan')])[0]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Each semirl row's seconds / each TRL trainer's, per target (below 1: semirl is faster; None: one never got
    there)."""
    out: dict[str, dict[str, float | None]] = {}
    for ours_name, ours in results.items():
        if not ours_name.startswith("semirl"):
            continue
        for name, res in results.items():
            if name.startswith("semirl"):
                continue
            key = f"{ours_name} / {name}"
            out[key] = {}
            for p in TARGET_POINTS:
                a, b = ours["targets"][f"seed+{p}"]["seconds"], res["targets"][f"seed+{p}"]["seconds"]
                out[key][f"seed+{p}"] = round(a / b, 2) if a is not None and b else None
    return out


def main() -> None:
    started = process_start()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", default=["semirl", *TRAINERS],
                        choices=["semirl", "semirl-warm", *TRAINERS],
                        help="semirl: timed from this command's start, the stack's start-up included (`semirl demo`); "
                        "semirl-warm: timed from the run's submission to a stack already up (`semirl up`, a cluster)")
    parser.add_argument("--spec", type=Path, default=DEMO_SPEC)
    parser.add_argument("--steps", type=int, help="train.steps for every system (default: the spec's)")
    parser.add_argument("--eval-every", type=int,
                        help="evaluate every k steps, for every system (default: the spec's sync interval, or 1)")
    parser.add_argument("--out-dir", type=Path, default=Path("bench/results"))
    parser.add_argument("--workdir", type=Path, default=Path(".semirl/bench-time-to-target"))
    parser.add_argument("--trl-python", type=Path, default=TRL_PYTHON)
    parser.add_argument("--semirl-eval", choices=["after", "platform"], default="after",
                        help="after: semirl trains without evaluation rounds and its saved versions are evaluated "
                        "afterwards by TRL's evaluator, the clock stopped as TRL's is (the same protocol on both "
                        "sides); platform: semirl's own evaluation rounds, which share its generator and its clock")
    args = parser.parse_args()

    spec_data = yaml.safe_load(args.spec.read_text())
    if args.steps:
        spec_data["train"]["steps"] = args.steps
    interval = spec_data.get("sync", {}).get("interval", 1)
    every = args.eval_every or (interval if isinstance(interval, int) else 1)
    spec_data["eval"] = {**spec_data.get("eval", {}), "every": every}
    spec_data["name"] = "time-to-target"
    params = peer_params(parse_run_spec(spec_data))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    params_path = args.out_dir / "time_to_target_params.json"
    params_path.write_text(json.dumps(dataclasses.asdict(params), indent=2))

    results: dict[str, dict[str, Any]] = {}
    for system in args.systems:
        ours = system.startswith("semirl")
        out = args.out_dir / f"time_to_target_{system.replace('-', '_') if ours else 'trl_' + system}.json"
        if ours:
            results[system] = run_semirl(spec_data, args.workdir / system, started, params, args.semirl_eval == "after",
                                         warm=system == "semirl-warm")
            out.write_text(json.dumps(results[system], indent=2))
        else:
            results[f"trl-{system.replace('_', '-')}"] = run_trl(system, params_path, out, args.trl_python)
    lines = table(results)
    summary = {"date": time.strftime("%Y-%m-%d"), "params": dataclasses.asdict(params), "table": lines,
               "ratios": ratios(results), "results": results}
    (args.out_dir / "time_to_target.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(lines))
    print(json.dumps(summary["ratios"], indent=2))


if __name__ == "__main__":
    main()
