"""Peer benchmark, TRL side: TRL's online DPO or GRPO on the demo's model, prompts, reward and evaluation, with HF
`generate` (what a CPU user of TRL gets), timed to the held-out accuracy targets of bench/time_to_target.py.

Runs in TRL's own environment (`bash bench/trl_env.sh` makes .venv-trl: CPU torch, TRL, math-verify; no vLLM,
no DeepSpeed, no semirl install). From semirl it reads only the tiny model's files under .semirl/tiny and two
pure modules by path: the math-verify scoring (`semirl.verifier.engine.score_in_process`, the paper's config)
and the chat-prompted HF sampler (`semirl.tinymodel.sampling.sample`) for the evaluation.

    .venv-trl/bin/python -m bench.trl_peer --trainer online_dpo --params P.json --out bench/results/trl_online_dpo.json

bench/time_to_target.py writes P.json from the demo spec (resolved by RunSpec) and runs this for both trainers.
Where TRL cannot do what the spec says it runs its own way: DIFFERENCES below, also written into the JSON.
Everything else is the spec's: prompts (template, chat template), sampling (n, temperature, top_p, max_tokens),
reward (math-verify, the paper's config), optimizer (AdamW lr, eps, betas, weight decay, clip, constant LR
after warm-up), prompts per step, steps and seed; fp32 and no gradient checkpointing, as the demo's trainer.

Evaluation is the controller's protocol (controller/evaluation.py): the eval set's first `limit` rows,
`samples_per_prompt` samples each at the eval temperature/top_p, pass@1 scored by math-verify, at step 0 and
every `eval_every` steps and at the end. The clock is stopped while evaluating: a point's `seconds` are the
wall seconds from the process's start (interpreter, imports and model load included) to the end of that
step, less the time spent evaluating before it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SERVICES = Path(__file__).resolve().parents[1] / "services"
TARGET_POINTS = (10, 30)  # accuracy targets: the seed's accuracy + these many percentage points
TRAINERS = ("online_dpo", "grpo")
DIFFERENCES = (
    "online DPO samples 2 completions per prompt (fixed in TRL): a step has batch_prompts pairs from "
    "2 x batch_prompts samples; semirl's DPO samples n per prompt and pairs a correct with a wrong one "
    "(skipping groups without both)",
    "online DPO's reference model is the seed for the whole run; semirl re-syncs it every s steps "
    "(sync.ref_interval's default)",
    "GRPO follows the spec's grpo section (beta = kl_beta, epsilon = clip_eps, scale_rewards from std_normalize, "
    "loss_type grpo / dr_grpo from length_normalize); dr_grpo divides the summed token losses by "
    "max_completion_length, semirl's Dr. GRPO does not (a constant factor, with the same gradient clipping)",
    "TRL is synchronous (generate, score, train in one process); semirl overlaps them across services",
)


@dataclasses.dataclass(frozen=True)
class PeerParams:
    """What both sides run, resolved from the run spec (bench/time_to_target.py writes it)."""

    model_dir: str
    train_path: str
    eval_path: str
    eval_limit: int | None
    prompt_template: str
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    eval_samples: int
    eval_temperature: float
    eval_top_p: float
    eval_max_tokens: int
    lr: float
    adam_eps: float
    betas: tuple[float, float]
    weight_decay: float
    grad_clip: float
    warmup_steps: int
    dpo_beta: float
    grpo_kl_beta: float          # GRPO: TRL's beta (k3 KL to the seed, as semirl's)
    grpo_clip_eps: float         # TRL's epsilon
    grpo_std_normalize: bool     # TRL's scale_rewards: "group" or "none"
    grpo_length_normalize: bool  # TRL's loss_type: "grpo" (mean over a response's tokens) or "dr_grpo" (sum / constant)
    batch_prompts: int
    steps: int
    seed: int
    eval_every: int

    @classmethod
    def load(cls, path: Path) -> PeerParams:
        raw = json.loads(path.read_text())
        return cls(**{**raw, "betas": tuple(raw["betas"])})


# --- pure helpers, shared with bench/time_to_target.py (no torch, no TRL) -----------------------------------


def process_start() -> float:
    """When this process started (epoch seconds): the moment the user's command started."""
    import psutil

    return float(psutil.Process().create_time())


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "arch": platform.machine(), "python": platform.python_version(),
            "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def time_to_targets(curve: Sequence[dict[str, Any]], points: Sequence[int] = TARGET_POINTS) -> dict[str, Any]:
    """Seconds to the first evaluation at or above seed + p points, for each p (None: never reached).

    `curve` holds {"step", "seconds", "accuracy"} points; the step-0 point is the seed."""
    ordered = sorted(curve, key=lambda point: point["step"])
    seed = ordered[0]["accuracy"]
    targets: dict[str, Any] = {}
    for p in points:
        goal = seed + p / 100
        hit = next((pt for pt in ordered[1:] if pt["accuracy"] >= goal - 1e-9), None)
        targets[f"seed+{p}"] = {"accuracy": goal, "seconds": hit["seconds"] if hit else None,
                                "step": hit["step"] if hit else None}
    return {"seed_accuracy": seed, "final_accuracy": ordered[-1]["accuracy"], "targets": targets}


def result(system: str, curve: list[dict[str, Any]], wall_s: float, **extra: Any) -> dict[str, Any]:
    """The JSON both sides write."""
    return {"system": system, **time_to_targets(curve), "wall_s": wall_s, "machine": machine(), **extra,
            "curve": curve}


def format_seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


# --- the TRL run (.venv-trl) --------------------------------------------------------------------------------


def _rows(path: str, limit: int | None = None) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def _reward(score: Callable[[str, str], float]) -> Callable[..., list[float]]:
    def math_verify_reward(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [score(text, gold) for text, gold in zip(texts, answer, strict=True)]

    return math_verify_reward


def held_out_accuracy(policy: Any, tokenizer: Any, params: PeerParams,  # noqa: ANN401
                      eval_rows: list[dict[str, str]]) -> float:
    """The evaluation protocol, with HF sampling (seeded, the RNG state restored after) and math-verify: used for
    TRL's policies here and, by bench/time_to_target.py's --semirl-eval after, for semirl's saved versions."""
    import torch

    from semirl.tinymodel.sampling import sample
    from semirl.verifier.engine import score_in_process

    with torch.random.fork_rng():
        groups = sample(policy, tokenizer, [params.prompt_template.replace("{problem}", r["problem"])
                                            for r in eval_rows],
                        params.eval_samples, params.eval_temperature, params.eval_top_p,
                        params.eval_max_tokens, seed=params.seed)
    scores = [score_in_process(tokenizer.decode(ids, skip_special_tokens=True), row["answer"])
              for row, group in zip(eval_rows, groups, strict=True) for ids in group]
    return sum(scores) / (len(eval_rows) * params.eval_samples)


def run(trainer_name: str, params: PeerParams, workdir: Path) -> dict[str, Any]:
    started = process_start()
    sys.path.insert(0, str(SERVICES))
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from semirl.verifier.engine import score_in_process

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # a warning per answerless sample, as the verifier
    assert not {"vllm", "deepspeed"} & {name.split(".")[0] for name in sys.modules}, "vLLM/DeepSpeed imported"
    tokenizer = AutoTokenizer.from_pretrained(params.model_dir)
    model = AutoModelForCausalLM.from_pretrained(params.model_dir, dtype=torch.float32)
    eval_rows = _rows(params.eval_path, params.eval_limit)
    train = Dataset.from_list([
        {"prompt": [{"role": "user", "content": params.prompt_template.replace("{problem}", row["problem"])}],
         "answer": row["answer"]}
        for row in _rows(params.train_path)
    ])

    def evaluate(policy: Any) -> float:
        return held_out_accuracy(policy, tokenizer, params, eval_rows)

    class EvalClock(TrainerCallback):  # type: ignore[misc]
        """Evaluates at step 0, every eval_every steps and at the end, with the clock stopped meanwhile."""

        def __init__(self) -> None:
            self.curve: list[dict[str, Any]] = []
            self.eval_s = 0.0

        def point(self, step: int, policy: Any) -> None:
            seconds = time.time() - started - self.eval_s
            begin = time.monotonic()
            accuracy = evaluate(policy)
            self.eval_s += time.monotonic() - begin
            self.curve.append({"step": step, "seconds": round(seconds, 3), "accuracy": accuracy})
            print(f"step {step:>3}  {seconds:6.1f} s  accuracy {accuracy:.3f}", flush=True)

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
            self.point(0, model)

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
            if state.global_step % params.eval_every == 0 or state.global_step == state.max_steps:
                self.point(state.global_step, model)

    common = {
        "output_dir": str(workdir), "max_steps": params.steps, "learning_rate": params.lr,
        "adam_epsilon": params.adam_eps, "adam_beta1": params.betas[0], "adam_beta2": params.betas[1],
        "weight_decay": params.weight_decay, "max_grad_norm": params.grad_clip, "warmup_steps": params.warmup_steps,
        "lr_scheduler_type": "constant_with_warmup", "seed": params.seed, "bf16": False,
        "gradient_checkpointing": False, "use_cpu": True, "report_to": "none", "save_strategy": "no",
        "disable_tqdm": True, "logging_steps": params.eval_every, "temperature": params.temperature,
        "top_p": params.top_p,
    }
    clock = EvalClock()
    reward = _reward(score_in_process)
    trainer: Any
    if trainer_name == "online_dpo":
        from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

        config = OnlineDPOConfig(**common, per_device_train_batch_size=params.batch_prompts,
                                 max_new_tokens=params.max_tokens, beta=params.dpo_beta)
        trainer = OnlineDPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=train,
                                   processing_class=tokenizer, callbacks=[clock])
        per_step = f"{params.batch_prompts} prompts x 2 samples (TRL's fixed pair)"
    else:
        from trl import GRPOConfig, GRPOTrainer

        config = GRPOConfig(**common, per_device_train_batch_size=params.batch_prompts * params.n,
                            num_generations=params.n, max_completion_length=params.max_tokens,
                            beta=params.grpo_kl_beta, epsilon=params.grpo_clip_eps,
                            scale_rewards="group" if params.grpo_std_normalize else "none",
                            loss_type="grpo" if params.grpo_length_normalize else "dr_grpo")
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=train,
                              processing_class=tokenizer, callbacks=[clock])
        per_step = f"{params.batch_prompts} prompts x {params.n} samples"
    trainer.train()
    wall = time.time() - started - clock.eval_s
    return result(
        f"trl-{trainer_name.replace('_', '-')}", clock.curve, round(wall, 3), eval_s=round(clock.eval_s, 3),
        versions={"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        generation="transformers generate (no vLLM)", samples_per_step=per_step,
        config={k: v for k, v in config.to_dict().items() if k in {
            "learning_rate", "adam_epsilon", "adam_beta1", "adam_beta2", "max_grad_norm", "lr_scheduler_type",
            "per_device_train_batch_size", "max_steps", "temperature", "top_p", "top_k", "beta", "loss_type",
            "num_generations", "max_completion_length", "max_new_tokens", "scale_rewards", "epsilon", "seed"}},
        differences=list(DIFFERENCES),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainer", choices=TRAINERS, required=True)
    parser.add_argument("--params", type=Path, required=True, help="JSON of PeerParams (bench/time_to_target.py)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trl-peer-") as workdir:
        results = run(args.trainer, PeerParams.load(args.params), Path(workdir))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "curve"}, indent=2))


if __name__ == "__main__":
    main()
