"""Trainer checkpoints on the shared store: policy versions, trainer state, the final policy.

docs/architecture.md, checkpoints.

Every directory is written through `staged_directory` (temporary sibling, MANIFEST.json, atomic rename), so a
reader never sees a half-written checkpoint. With several ranks, every rank writes its DeepSpeed shards into rank
0's staging directory — the store is one shared filesystem (the chart's ReadWriteMany claim) — and rank 0 renames
it once all have written. The policy version is written first and committed at once; the trainer state (the
bulk of the bytes: optimizer and reference) follows, so a trainer checkpoint always has its policy version beside
it, and a restart may resume from a trainer state older than the committed policy (it replays the steps between
on their still-pending groups). Committing to the controller and acking the stream entries a trainer state
covers are the service's job.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from semirl.core.checkpoint_store import (
    MANIFEST,
    CheckpointError,
    RunCheckpoints,
    staged_copy,
    staged_directory,
    verify,
)
from semirl.core.ownership import manifest_run_id, marker_run_id, recorded_run_id
from semirl.trainer.engine import STATE_FILE, TrainingEngine
from semirl.trainer.ranks import RankDriver

log = logging.getLogger(__name__)

# Files a generator needs besides the weights and config: tokenizer and generation settings.
_MODEL_SIDE_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
    "vocab.txt", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
    "generation_config.json",
)


def copy_model_side_files(seed_dir: Path, destination: Path) -> list[str]:
    copied = []
    for name in _MODEL_SIDE_FILES:
        source = seed_dir / name
        if source.is_file() and not (destination / name).exists():
            shutil.copy2(source, destination / name)
            copied.append(name)
    return copied


class TrainerCheckpoints:
    """Writes and reads one run's trainer checkpoints."""

    def __init__(self, store_root: Path | str, run_id: str, subdir: str | None, seed_model_path: str) -> None:
        self.run_id = run_id
        self.paths = RunCheckpoints(store_root, run_id, subdir)
        self.seed_model_path = Path(seed_model_path)

    def save(self, driver: RankDriver, step: int, extra_state: dict[str, Any]) -> Path:
        """Policy version `step`, then the trainer state of `step` (the order of a checkpoint without a commit
        between); the policy directory."""
        policy_dir = self.save_policy(driver, step)
        self.save_trainer_state(driver, step, extra_state)
        return policy_dir

    def save_policy(self, driver: RankDriver, step: int) -> Path:
        """Policy version `step` in HF format (rank 0 gathers the weights), what generators load.

        A valid version `step` of this run that is already there is kept: it was written before a restart and
        may be committed and loading in generators now. The replay that reaches `step` again trains on the same
        groups, so its weights differ from the kept ones only by the nondeterminism of the replay."""
        engine = self._engine_at(driver, step)
        policy_dir = self.paths.policy_dir(step)
        if policy_dir.is_dir():
            try:
                verify(policy_dir)
            except CheckpointError:
                pass  # torn or corrupt: written anew below
            else:
                if manifest_run_id(policy_dir) == self.run_id:
                    log.info("policy v%d of %s is already written (before a restart); keeping it", step, self.run_id)
                    return policy_dir
        weights = driver.gather_policy(step)
        assert weights is not None, "rank 0 gathers the policy weights"
        with staged_directory(policy_dir, {"run_id": self.run_id, "version": step}) as staging:
            engine.write_policy(staging, weights)
            copy_model_side_files(self.seed_model_path, staging)
        return policy_dir

    def save_trainer_state(self, driver: RankDriver, step: int, extra_state: dict[str, Any]) -> Path:
        """The trainer state of `step` (every rank writes its DeepSpeed shards), what a restart resumes from. It
        goes after the policy's commit, off the generators' critical path (docs/architecture.md, decision 32)."""
        engine = self._engine_at(driver, step)
        state = {**engine.state(), **extra_state, "run_id": self.run_id}
        with staged_directory(self.paths.trainer_dir(step), {"run_id": self.run_id, "step": step}) as staging:
            driver.save_state(step, staging)
            (staging / STATE_FILE).write_text(json.dumps(state, indent=1, sort_keys=True))
        return self.paths.trainer_dir(step)

    @staticmethod
    def _engine_at(driver: RankDriver, step: int) -> TrainingEngine:
        engine = driver.worker.engine
        assert engine is not None
        if engine.step != step:
            raise ValueError(f"engine is at step {engine.step}, not {step}")
        return engine

    def latest_step(self) -> int | None:
        return self.paths.latest_valid_trainer_step()

    def foreign_owner(self) -> str | None:
        """Why the run directory is not this run's own (its RUN_ID marker or a checkpoint names another run id, or
        a checkpoint names none); None when it is. Resuming from such a checkpoint would train on another run's
        state, or end at once on its last step, and the next checkpoints would overwrite its policies."""
        marked = marker_run_id(self.paths.run_dir)
        if marked is not None and marked != self.run_id:
            return f"the run directory {self.paths.run_dir} belongs to run {marked} (its RUN_ID), not {self.run_id}"
        checkpoints = [self.paths.trainer_dir(s) for s in self.paths.trainer_steps()]
        checkpoints += [self.paths.policy_dir(v) for v in self.paths.policy_versions()]
        checkpoints += [self.paths.final_dir] if self.paths.final_dir.is_dir() else []
        for directory in checkpoints:
            if not (directory / MANIFEST).is_file():
                continue  # torn: never resumed from nor committed, and the next save replaces it
            recorded = {manifest_run_id(directory)}
            if (directory / STATE_FILE).is_file():
                recorded.add(recorded_run_id(directory / STATE_FILE))
            if recorded != {self.run_id}:
                others = sorted(r for r in recorded if r is not None and r != self.run_id)
                what = f"run id {', '.join(others)}" if others else "no run id"
                return (f"the checkpoint {directory} records {what}, not {self.run_id}: "
                        "a run does not resume from, or overwrite, another run's checkpoints")
        return None

    def verified_trainer_dir(self, step: int) -> Path:
        directory = self.paths.trainer_dir(step)
        verify(directory)
        return directory

    def save_final(self, policy_dir: Path) -> Path:
        """The run's final policy: a staged copy of the last policy version."""
        return staged_copy(policy_dir, self.paths.final_dir, {"run_id": self.run_id, "source": policy_dir.name})
