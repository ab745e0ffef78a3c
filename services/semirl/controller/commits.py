"""CommitCheckpoint: a policy version the trainer wrote becomes the run's, then the run advances and old versions go.

The commit is verified (inside the run directory, the version's own directory, a step of the run, its manifest's
hashes; final/ too for the last step) before it is recorded: a generator is never sent a half-written
checkpoint. A repeated commit (a trainer retry) is a no-op that succeeds. After recording, the run advances
(windows, eval rounds, a waiting sync, success) and retention keeps `checkpoint.keep` versions, never the one
generators serve, the newest, or one whose evaluation is in flight (docs/architecture.md, checkpoints).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from semirl.core.checkpoint_store import CheckpointError, verify
from semirl.core.runstate import RunRecord

from .eval_rounds import EvalRounds
from .run_lifecycle import RunLifecycle
from .run_store import RunStore

log = logging.getLogger(__name__)


class Commits:
    def __init__(self, run_store: RunStore, lifecycle: RunLifecycle, eval_rounds: EvalRounds,
                 advance: Callable[[RunRecord], None], wake: threading.Event) -> None:
        self.run_store = run_store
        self.lifecycle = lifecycle
        self.eval_rounds = eval_rounds
        self.advance = advance
        self.wake = wake

    def commit(self, run_id: str, version: int, path: str, final: bool) -> tuple[bool, str]:
        """Verify, record, advance, retain; (accepted, why not). Called under the controller's lock."""
        record = self.lifecycle.readable(run_id)
        if record is None:
            return False, f"unknown or unreadable run {run_id}"
        if record.state != "running":
            if record.state == "succeeded" and version <= record.policy_version:
                return True, ""
            return False, f"run {run_id} is {record.state}"
        spec = record.spec
        checkpoints = self.run_store.checkpoints(record)
        directory = Path(path).resolve() if path else checkpoints.policy_dir(version)
        if not directory.is_relative_to(checkpoints.run_dir):
            return False, f"{directory} is outside the run directory {checkpoints.run_dir}"
        if directory != checkpoints.policy_dir(version):
            return False, f"version {version} must be committed from {checkpoints.policy_dir(version)}"
        if not 1 <= version <= spec.train.steps:
            return False, f"version {version} is not a step of this run (1..{spec.train.steps})"
        if version < record.policy_version or (version == record.policy_version and not final):
            return True, ""  # a repeated commit (trainer retry): already done
        try:
            verify(directory)
            if final:
                if version != spec.train.steps:
                    raise CheckpointError(f"final commit of version {version}, run has {spec.train.steps} steps")
                verify(checkpoints.final_dir)
        except CheckpointError as err:
            log.warning("refusing commit of %s v%d: %s", run_id, version, err)
            return False, str(err)
        record.policy_version = version
        record.policy_path = str(directory)
        if final:
            record.final_path = str(checkpoints.final_dir)
        self.run_store.save(record)
        log.info("run %s: committed v%d%s", run_id, version, " (final)" if final else "")
        self.advance(record)
        protect = {record.generation_version, record.policy_version} | self.eval_rounds.versions_in_flight(record)
        removed = checkpoints.retain(spec.checkpoint.keep, protect)
        if removed:
            log.info("run %s: retention removed versions %s", run_id, removed)
        self.wake.set()
        return True, ""
