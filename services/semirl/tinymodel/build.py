"""The tiny model factory: data + tokenizer + tiny Llama + SFT warm start, saved as an HF directory."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from pydantic import BaseModel

from semirl.core.files import share_readable
from semirl.data.synthetic import make_problems, preference_rows, reference_response, write_jsonl

STAMP = "tiny_setup.json"
PREFERENCES = "preferences.jsonl"  # beside train.jsonl: its problems as (prompt, chosen, rejected) rows


class TinyParams(BaseModel):
    """Everything the build depends on; the stamp records it, a rebuild happens only when it changes."""
    seed: int = 0
    layers: int = 2
    vocab_size: int = 512
    n_sft: int = 6000            # SFT pairs from the train split
    n_train: int = 2000          # RL prompts (train split, first n_sft of the same order -> seen in SFT)
    n_eval: int = 500            # held-out eval problems (eval split)
    n_val: int = 100             # SFT early-stopping problems (train split, not in the SFT pairs)
    target_val_accuracy: float = 0.35
    max_steps: int = 600
    min_steps: int = 100
    lr: float = 3e-3
    seed_eval_problems: int = 200
    version: int = 3             # 2: chat template and chat-rendered SFT; 3: train/eval split by unordered operands


class TinySetup(BaseModel):
    model_dir: Path
    train_path: Path
    eval_path: Path
    seed_accuracy: float         # held-out, 4 samples each at temperature 0.6, top_p 0.9
    sft_steps: int
    build_seconds: float
    params: TinyParams


def build_tiny_setup(out_dir: Path, seed: int = 0, params: TinyParams | None = None) -> TinySetup:
    """Write out_dir/model/ and out_dir/data/{train,eval}.jsonl; a no-op when the stamp matches `params`."""
    out_dir = Path(out_dir)
    params = (params or TinyParams()).model_copy(update={"seed": seed})
    stamp = out_dir / STAMP
    if stamp.is_file():
        setup = TinySetup.model_validate_json(stamp.read_text())
        if setup.params == params and (setup.model_dir / "config.json").is_file():
            write_preference_set(setup.train_path)
            return setup
    return _build(out_dir, params)


def _build(out_dir: Path, params: TinyParams) -> TinySetup:
    # torch and transformers load only here: the cached path above (every `semirl demo` after the first) stays
    # free of their ~6 s of imports, which would otherwise delay the stack's start.
    import torch
    from transformers import GenerationConfig

    from semirl.tinymodel.model import make_model
    from semirl.tinymodel.sampling import accuracy
    from semirl.tinymodel.sft import SFTConfig, sft
    from semirl.tinymodel.tokenizer import train_tokenizer

    seed = params.seed
    stamp = out_dir / STAMP
    started = time.perf_counter()
    torch.manual_seed(seed)
    pool = make_problems(params.n_sft + params.n_val, seed, "train")
    sft_rows, val_rows = pool[:params.n_sft], pool[params.n_sft:]
    eval_rows = make_problems(params.n_eval, seed, "eval")
    pairs = [(row["problem"], reference_response(row)) for row in sft_rows]

    tokenizer = train_tokenizer([p + r for p, r in pairs], vocab_size=params.vocab_size)
    model = make_model(tokenizer, layers=params.layers, seed=seed)

    def reached_target(step: int) -> bool:
        return accuracy(model, tokenizer, val_rows, n=2, seed=seed + step) >= params.target_val_accuracy

    config = SFTConfig(max_steps=params.max_steps, lr=params.lr, seed=seed, min_steps=params.min_steps)
    steps = sft(model, tokenizer, pairs, config, stop_when=reached_target)
    seed_accuracy = accuracy(model, tokenizer, eval_rows[:params.seed_eval_problems], n=4, seed=seed)

    model_dir = out_dir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    share_readable(model_dir)
    data_dir = out_dir / "data"
    train_path = write_jsonl(sft_rows[:params.n_train], data_dir / "train.jsonl")
    eval_path = write_jsonl(eval_rows, data_dir / "eval.jsonl")
    setup = TinySetup(model_dir=model_dir, train_path=train_path, eval_path=eval_path, seed_accuracy=seed_accuracy,
                      sft_steps=steps, build_seconds=round(time.perf_counter() - started, 1), params=params)
    stamp.write_text(json.dumps(setup.model_dump(mode="json"), indent=2))
    write_preference_set(train_path)
    return setup


def write_preference_set(train_path: Path) -> Path:
    """data/preferences.jsonl, the train problems as preference pairs (offline DPO from a static dataset); cheap,
    so written whenever it is missing rather than being part of the stamped build."""
    path = Path(train_path).with_name(PREFERENCES)
    if not path.is_file():
        rows = [json.loads(line) for line in Path(train_path).read_text().splitlines() if line.strip()]
        write_jsonl(preference_rows(rows), path)
    return path
