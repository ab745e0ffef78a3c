"""The tiny setup's files a reward-model run needs, made on demand (`semirl tiny-model`, `semirl demo`):
the tiny reward model (tinymodel/reward_model.py), the non-verifiable task's prompts and a mixed task.

    .semirl/tiny/reward_model/        the tiny RM (HF sequence classifier, the policy's tokenizer)
    .semirl/tiny/data/rm_train.jsonl  train-split prompts scored by the RM (reward_source per row)
    .semirl/tiny/data/rm_eval.jsonl   held-out eval-split prompts scored by the RM
    .semirl/tiny/data/mixed.jsonl     train.jsonl's math rows and rm_train.jsonl's rows interleaved, one per source
"""

from __future__ import annotations

import json
from pathlib import Path

from semirl.data.synthetic import write_jsonl
from semirl.tinymodel.build import TinySetup
from semirl.tinymodel.reward_model import TinyRewardModel, build_tiny_reward_model, write_rm_task

MIXED = "mixed.jsonl"


def ensure_reward_task(setup: TinySetup, out_dir: Path, seed: int = 0) -> TinyRewardModel:
    """Build (or reuse) the tiny RM and write the RM and mixed task files beside the tiny setup's data."""
    reward_model = build_tiny_reward_model(out_dir, setup.model_dir, setup.train_path, seed=seed)
    data_dir = Path(setup.train_path).parent
    rm_train, _ = write_rm_task(data_dir, seed)
    math_rows = [json.loads(line) for line in Path(setup.train_path).read_text().splitlines() if line.strip()]
    rm_rows = [json.loads(line) for line in rm_train.read_text().splitlines() if line.strip()]
    mixed = [row for pair in zip(math_rows, rm_rows, strict=False) for row in pair]
    write_jsonl(mixed, data_dir / MIXED)
    return reward_model
