"""Which policy a task needs, from the task and the run's record (read from Redis, cached per run).

- A synchronous task names its version v(t); its path is on the task, else the run's committed version when that is
  v, else the seed for v0. None: no known path (the task is retried, then given up on).
- An asynchronous task (`oldest_policy` set) takes any version of its run from the oldest the trainer accepts: the
  loaded one when it is in range, else the run's newest commit.
- A version committed in memory (docs/architecture.md, weight transfer) has no path on its tasks: a generator that
  holds it serves it; any other loads its export, written after the commit (the loop waits for it).
- The engine settings a run needs (its spec's dtype and context length) and the policy a generator started mid-run
  must serve (the committed version if released, else the seed) come from the same record.
"""

from __future__ import annotations

import logging
from pathlib import Path

import redis

from semirl.core.checkpoint_store import RunCheckpoints
from semirl.core.runstate import RunRecord, load_run
from semirl.generator.engine import EngineConfig, Policy
from semirl.proto import types_pb2

log = logging.getLogger(__name__)


def engine_config_for(record: RunRecord | None, base: EngineConfig) -> EngineConfig:
    if record is None:
        return base
    return EngineConfig(
        dtype=record.spec.model.dtype,
        max_model_len=record.spec.model.max_model_len,
        enforce_eager=base.enforce_eager,
        seed=base.seed,
        extra=base.extra,
    )


def export_policy(record: RunRecord, version: int) -> Policy:
    """Version `version` of the run from its export in the store (which may still be being written)."""
    if version == 0:
        return Policy(0, str(Path(record.spec.model.path).resolve()))
    return Policy(version, str(RunCheckpoints.at(record.run_dir).policy_dir(version)))


def current_generation_policy(record: RunRecord) -> Policy:
    """The policy a generator started mid-run loads first: the committed version if released (its export when it
    was sent in memory, else the newest export written: the next sync brings the generator up to date), else the
    seed (v0)."""
    if record.generation_version == record.policy_version and record.policy_path:
        return Policy(record.policy_version, record.policy_path)
    if record.generation_version == record.policy_version > 0:
        checkpoints = RunCheckpoints.at(record.run_dir)
        newest = checkpoints.newest_export()
        if newest is not None:
            return Policy(newest, str(checkpoints.policy_dir(newest)))
    return Policy(0, record.spec.model.path)


class RunPolicies:
    """Run records by id (a malformed one reads as None and never stops generation), and the policy a task needs."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._records: dict[str, RunRecord | None] = {}

    def record(self, run_id: str, *, fresh: bool = False) -> RunRecord | None:
        if fresh or run_id not in self._records:
            try:
                self._records[run_id] = load_run(self.client, run_id)
            except Exception:  # noqa: BLE001 - a malformed record must not stop generation
                log.exception("cannot read run record %s", run_id)
                return None
        return self._records[run_id]

    def required(self, task: types_pb2.PromptTask, loaded: Policy | None, loaded_run: str) -> Policy | None:
        """The policy `task` must be served with, given what is loaded (for which run)."""
        version = int(task.policy.version)
        same_run = loaded is not None and loaded_run == task.run_id
        if task.HasField("oldest_policy"):  # asynchronous: any version of the run the trainer still accepts
            oldest = int(task.oldest_policy.version)
            if same_run and loaded.version >= oldest:  # type: ignore[union-attr]
                return loaded
            record = self.record(task.run_id, fresh=True)
            if record is not None and record.policy_version > max(version, oldest - 1):  # the newest commit
                if record.policy_path:
                    return Policy(record.policy_version, str(Path(record.policy_path).resolve()))
                return export_policy(record, record.policy_version)
        if same_run and loaded.version == version and loaded.in_memory:  # type: ignore[union-attr]
            return loaded
        if task.policy.path:
            return Policy(version, str(Path(task.policy.path).resolve()))
        if loaded is not None and loaded.version == version:
            return loaded
        record = self.record(task.run_id, fresh=True)
        if record is not None:
            if record.policy_version == version and record.policy_path:
                return Policy(version, str(Path(record.policy_path).resolve()))
            if 0 <= version <= record.policy_version:
                return export_policy(record, version)
        return None
