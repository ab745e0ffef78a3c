"""CommitCheckpoint: a new policy version becomes the run's, then the run advances and old versions go.

Two kinds (docs/architecture.md, weight transfer):
- in memory: the members of the sync's broadcast plan hold the version; nothing is on disk yet. The run advances
  at once (the next window's tasks name the version with no path) and the sync records the transfers;
- an export: the trainer wrote the version's directory. It is checked (inside the run directory, the version's
  own directory, a step of the run, every file of its manifest present at its size; final/ too for the last step)
  before it is recorded: a generator is never sent a half-written checkpoint. The writer hashed every byte into
  the manifest; the controller does not hash gigabytes under its lock (SEMIRL_VERIFY_ON_COMMIT=full does). The
  export of a version committed in memory completes it, and fans it out to the generators that lack it.
 A repeated commit (a trainer retry) is a no-op that succeeds. After recording, the run advances
(windows, eval rounds, a waiting sync, success) and retention keeps `checkpoint.keep` versions, never the one
generators serve, the newest, or one whose evaluation is in flight (docs/architecture.md, checkpoints).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from semirl.core.checkpoint_store import CheckpointError, check_complete, verify
from semirl.core.runstate import RunRecord

from .eval_rounds import EvalRounds
from .run_lifecycle import RunLifecycle
from .run_store import RunStore
from .syncs import WeightSyncs
from .views import TransferView

log = logging.getLogger(__name__)

VERIFY_ON_COMMIT_ENV = "SEMIRL_VERIFY_ON_COMMIT"  # "full": hash every byte again (an audit), else sizes


class Commits:
    def __init__(self, run_store: RunStore, lifecycle: RunLifecycle, eval_rounds: EvalRounds, syncs: WeightSyncs,
                 advance: Callable[[RunRecord], None], wake: threading.Event) -> None:
        self.run_store = run_store
        self.syncs = syncs
        self.lifecycle = lifecycle
        self.eval_rounds = eval_rounds
        self.advance = advance
        self.wake = wake

    def commit_in_memory(self, run_id: str, version: int, transfers: list[TransferView]) -> tuple[bool, str]:
        """Record a version the broadcast's members hold; (accepted, why not). Called under the controller's lock."""
        record = self.lifecycle.readable(run_id)
        if record is None:
            return False, f"unknown or unreadable run {run_id}"
        if record.state != "running":
            return (True, "") if version <= record.policy_version else (False, f"run {run_id} is {record.state}")
        if not 1 <= version < record.spec.train.steps:
            last = record.spec.train.steps
            return False, f"version {version} is not a step before the last of this run (1..{last - 1})"
        if version <= record.policy_version:
            return True, ""  # a repeated commit (trainer retry)
        if not any(t.ok for t in transfers):
            return False, "an in-memory commit needs a generator that received the version"
        record.policy_version = version
        record.policy_path = ""
        self.syncs.note_transfers(run_id, version, transfers)
        self.run_store.save(record)
        log.info("run %s: committed v%d in memory (held by %s)", run_id, version,
                 ", ".join(t.generator for t in transfers if t.ok))
        self.advance(record)
        self.wake.set()
        return True, ""

    def commit(self, run_id: str, version: int, path: str, final: bool,
               transfers: list[TransferView] | None = None) -> tuple[bool, str]:
        """Check, record, advance, retain; (accepted, why not). Called under the controller's lock. `transfers`:
        a broadcast that reached no generator, for the sync's record."""
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
        export_of_held = version == record.policy_version and not record.policy_path and not final
        if not export_of_held and (version < record.policy_version or (version == record.policy_version
                                                                       and not final)):
            return True, ""  # a repeated commit (trainer retry): already done
        check = verify if os.environ.get(VERIFY_ON_COMMIT_ENV) == "full" else check_complete
        try:
            check(directory)
            if final:
                if version != spec.train.steps:
                    raise CheckpointError(f"final commit of version {version}, run has {spec.train.steps} steps")
                check(checkpoints.final_dir)
        except CheckpointError as err:
            log.warning("refusing commit of %s v%d: %s", run_id, version, err)
            return False, str(err)
        record.policy_version = version
        record.policy_path = str(directory)
        if final:
            record.final_path = str(checkpoints.final_dir)
        if transfers:
            self.syncs.note_transfers(run_id, version, transfers)
        self.run_store.save(record)
        if export_of_held:
            log.info("run %s: export of v%d committed", run_id, version)
            self.syncs.export_written(record, version)
        else:
            log.info("run %s: committed v%d%s", run_id, version, " (final)" if final else "")
        self.advance(record)
        protect = {record.generation_version, record.policy_version} | self.eval_rounds.versions_in_flight(record)
        removed = checkpoints.retain(spec.checkpoint.keep, protect)
        if removed:
            log.info("run %s: retention removed versions %s", run_id, removed)
        self.wake.set()
        return True, ""
