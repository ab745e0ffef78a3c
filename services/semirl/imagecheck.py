"""`python -m semirl.imagecheck COMPONENT...`: each component's start path, run inside its image as its user.

What a component needs at run time beyond its imports: the trainer builds a ZeRO-3 DeepSpeed engine on a tiny random
Llama and trains two DPO steps (the path every 8B example takes, and the one a missing `accelerate` broke); the
reward service loads a sequence classifier through its engine and scores; the verifier scores with math-verify; the
generator imports vLLM and finds semirl's weight-transfer plugin (and nvcc where CUDA_HOME is set); the controller
imports its run-tracking exporters; `demo` reads the baked demo model and starts the embedded redis-server.
`--expect-cuda` also asserts that torch is a CUDA build (an index that carries `+cpu` wheels satisfies
`torch==2.13.0` too). Runs without a GPU, on the CPU; prints one JSON line per check and exits 1 when one fails
(docker/README.md, tests/images/test_images_built.py).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

DEMO_DIR = Path("/opt/semirl/demo")
VOCAB = 64


def _tiny_llama(out: Path, *, classifier: bool = False) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
        pad_token_id=0, tie_word_embeddings=False, num_labels=1,
    )
    model = LlamaForSequenceClassification(config) if classifier else LlamaForCausalLM(config)
    model.save_pretrained(out)
    return out


def _tiny_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3} | {chr(97 + i): 4 + i for i in range(26)}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.save_pretrained(out)


def check_trainer(work: Path) -> dict[str, object]:
    """A ZeRO-3 engine (DeepSpeed's partitioned loading through transformers' HfDeepSpeedConfig) and two DPO
    steps, on the CPU accelerator in a world of one."""
    os.environ["DS_ACCELERATOR"] = "cpu"  # the GPU image's default is cuda; the check runs anywhere
    for name, value in {"MASTER_ADDR": "127.0.0.1", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    import torch

    if shutil.which(os.environ.get("CXX", "c++")) is None:
        # The GPU trainer image has no compiler (its CUDA path needs none), and DeepSpeed's CPU accelerator would
        # JIT-build its shared-memory collective op at init: an intra-node speed-up a world of one never uses.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False

    from semirl.spec import RunSpec
    from semirl.trainer.engine import TrainingEngine
    from semirl.trainer.objectives import StepExamples
    from semirl.trainer.pairs import Pair

    model = _tiny_llama(work / "policy")
    spec = RunSpec.model_validate({
        "name": "imagecheck", "model": {"path": str(model)}, "data": {"train": {"path": "unused.jsonl"}},
        "sync": {"interval": 1}, "train": {"steps": 2, "batch_prompts": 2, "micro_batch_pairs": 2, "seed": 0},
        "optim": {"lr": 1e-3}, "deepspeed": {"zero_stage": 3},
    })
    engine = TrainingEngine(spec)
    gen = torch.Generator().manual_seed(1)
    pairs = [Pair(f"p-{i}", 0, tuple(int(t) for t in torch.randint(4, VOCAB, (4,), generator=gen)),
                  tuple(int(t) for t in torch.randint(4, VOCAB, (5,), generator=gen)),
                  tuple(int(t) for t in torch.randint(4, VOCAB, (3,), generator=gen)), 0, 1) for i in range(2)]
    # sync.interval 1 re-syncs the reference every step, so the DPO loss stays ln 2; the policy's own margin moves
    steps = [engine.train_step(StepExamples(examples=pairs, prompts=2)) for _ in range(2)]
    margins = [round(float(m["chosen_logp"] - m["rejected_logp"]), 4) for m in steps]
    engine.close()
    if not margins[1] > margins[0]:
        raise AssertionError(f"a DPO step did not raise the chosen-over-rejected log-prob margin: {margins}")
    return {"zero_stage": 3, "policy_margins": margins, "accelerate": importlib.metadata.version("accelerate")}


def check_reward(work: Path) -> dict[str, object]:
    from semirl.reward.engine import RewardEngine, RewardEngineConfig

    model = _tiny_llama(work / "reward", classifier=True)
    _tiny_tokenizer(model)
    engine = RewardEngine(RewardEngineConfig(model_path=str(model), prompt_format="raw", device="cpu"))
    scores = engine.score([("abc", "def"), ("abc", "xyz")])
    return {"scores": [round(s.score, 6) for s in scores]}


def check_verifier(_: Path) -> dict[str, object]:
    from semirl.verifier.engine import score_in_process

    right, wrong = score_in_process(r"so \boxed{\frac{1}{2}}", "0.5"), score_in_process(r"\boxed{3}", "0.5")
    if (right, wrong) != (1.0, 0.0):
        raise AssertionError(f"math-verify scored {right} and {wrong}, not 1.0 and 0.0")
    return {"right": right, "wrong": wrong}


def check_controller(_: Path) -> dict[str, object]:
    importlib.import_module("semirl.controller.__main__")
    fastapi = importlib.import_module("fastapi")
    for module in ("semirl.controller.tracking_mlflow", "semirl.controller.tracking_wandb",
                   "semirl.controller.artifact_export", "mlflow.tracking", "wandb", "boto3"):
        importlib.import_module(module)  # run tracking is a setting: its packages are in the image
    return {"fastapi": fastapi.__version__, "mlflow": importlib.metadata.version("mlflow-skinny"),
            "wandb": importlib.metadata.version("wandb")}


def check_generator(_: Path) -> dict[str, object]:
    vllm = importlib.import_module("vllm")
    importlib.import_module("semirl.generator.__main__")
    plugins = {e.name: e.value for e in importlib.metadata.entry_points(group="vllm.general_plugins")}
    if "semirl_weight_transfer" not in plugins:
        raise AssertionError(f"vLLM would not load semirl's weight-transfer backend: plugins {plugins}")
    importlib.import_module(plugins["semirl_weight_transfer"].split(":")[0])
    found: dict[str, object] = {"vllm": vllm.__version__}
    if os.environ.get("CUDA_HOME"):
        nvcc = subprocess.run([str(Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc"), "--version"], check=True,
                              capture_output=True, text=True).stdout
        found["nvcc"] = nvcc.strip().splitlines()[-1]
    return found


def check_demo(work: Path) -> dict[str, object]:
    """The baked demo is readable by this user (every file), its model loads, and the embedded redis-server runs."""
    from transformers import AutoConfig, AutoTokenizer

    from semirl.core.redis_server import start_redis

    unreadable = [str(p) for p in DEMO_DIR.rglob("*") if p.is_file() and not os.access(p, os.R_OK)]
    if unreadable:
        raise AssertionError(f"{len(unreadable)} demo files unreadable by uid {os.getuid()}: {unreadable[:5]}")
    model = DEMO_DIR / "model"
    AutoConfig.from_pretrained(model)
    AutoTokenizer.from_pretrained(model)
    server = start_redis(work / "redis")
    try:
        pong = server.client().ping()
    finally:
        server.stop()
    return {"files": sum(1 for p in DEMO_DIR.rglob("*") if p.is_file()), "redis": pong}


def check_cuda_build(_: Path) -> dict[str, object]:
    import torch

    if not torch.version.cuda:
        raise AssertionError(f"torch {torch.__version__} is not a CUDA build")
    return {"torch": torch.__version__, "cuda": torch.version.cuda}


CHECKS: dict[str, Callable[[Path], dict[str, object]]] = {
    "controller": check_controller, "verifier": check_verifier, "trainer": check_trainer, "reward": check_reward,
    "generator": check_generator, "demo": check_demo,
}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("components", nargs="+", choices=sorted(CHECKS))
    parser.add_argument("--expect-cuda", action="store_true", help="assert that torch is a CUDA build")
    args = parser.parse_args(argv)
    checks = [(name, CHECKS[name]) for name in args.components]
    if args.expect_cuda:
        checks.insert(0, ("cuda-build", check_cuda_build))
    failed = 0
    work = Path(tempfile.mkdtemp(prefix="semirl-imagecheck-"))
    try:
        for name, check in checks:
            started = time.monotonic()
            try:
                found = check(work / name)
                result = {"check": name, "ok": True, **found}
            except Exception as err:  # every check reports, the first failure does not hide the rest
                failed += 1
                result = {"check": name, "ok": False, "error": f"{type(err).__name__}: {err}"}
            result["seconds"] = round(time.monotonic() - started, 2)
            print(json.dumps(result), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
