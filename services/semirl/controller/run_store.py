"""Run records, the run queue, step metrics and eval bookkeeping in Redis (no HTTP, no scheduling).

The controller is the only writer of run records. Everything here is keyed by `semirl.core.keys`.
Eval bookkeeping lives in two hashes: `run_eval_key(run_id)` field `round:<step>` = the released round
(`EvalRound`: policy version, path, prompts and samples per set), read on every scheduler round, and
`run_eval_results_key(run_id)` field `<prompt_id>` = one scored eval prompt (`PromptOutcome`, idempotent on
redelivery; thousands per run), read only when scored groups arrive and dropped when the run ends.
Weight syncs are a list, `run_syncs_key(run_id)`, appended in the MULTI/EXEC that saves the record counting them
and kept, like the record and the step metrics, as the run's history.
"""

from __future__ import annotations

import errno
import json
import secrets
import time
from pathlib import Path
from typing import Any

import redis
from google.protobuf import json_format

from semirl.core import keys, ownership
from semirl.core.checkpoint_store import RunCheckpoints
from semirl.core.runstate import RunRecord, RunRecordUnreadable, load_run, save_run
from semirl.core.streams import backlog
from semirl.proto import controller_pb2
from semirl.spec import RunSpec

from .evaluation import EvalRound, PromptOutcome
from .submission import SpecRejected, spec_error
from .views import ReloadSummary, WeightSync


class RunStore:
    """Run records, queue, metrics and eval results of every run."""

    def __init__(self, client: redis.Redis, store: Path | str) -> None:
        self.client = client
        self.store = Path(store).resolve()

    # --- runs ------------------------------------------------------------------------------------------

    def checkpoints(self, record: RunRecord) -> RunCheckpoints:
        return RunCheckpoints(self.store, record.id, record.spec.checkpoint.subdir)

    def policy_path(self, record: RunRecord, version: int) -> str:
        """Where version `version` of the run's policy is: the seed model for v0, "" for the newest version while
        it is held in memory only (its export not committed yet), else its store directory."""
        if version == 0:
            return record.spec.model.path
        if version == record.policy_version and not record.policy_path:
            return ""
        return str(self.checkpoints(record).policy_dir(version))

    def create(self, spec: RunSpec) -> RunRecord:
        """Store a new queued run (spec already validated) and append it to the queue."""
        while True:
            run_id = f"{spec.name}-{secrets.token_hex(4)}"
            if not self.client.exists(keys.run_key(run_id)):
                break
        run_dir = RunCheckpoints(self.store, run_id, spec.checkpoint.subdir).run_dir
        try:  # under the scheduler's lock: compared with every run record, then marked as this run's
            ownership.claim_run_dir(self.client, self.store, run_id, run_dir)
        except ownership.DirectoryTaken as err:
            raise SpecRejected([spec_error(("checkpoint", "subdir"), str(err))]) from err
        except OSError as err:  # a name the OS refuses shows only now, when the directory is made
            if err.errno != errno.ENAMETOOLONG:
                raise
            problem = spec_error(("checkpoint", "subdir"), f"the OS refuses this directory: {err.strerror}")
            raise SpecRejected([problem]) from err
        record = RunRecord(id=run_id, name=spec.name, spec=spec, run_dir=str(run_dir), policy_path=spec.model.path)
        with self.client.pipeline(transaction=True) as pipe:
            save_run(pipe, record)
            pipe.rpush(keys.RUN_INDEX, run_id)
            pipe.rpush(keys.RUN_QUEUE, run_id)
            pipe.execute()
        return record

    def get(self, run_id: str) -> RunRecord | None:
        """The run's record, None for an unknown id; raises RunRecordUnreadable for a record that does not load."""
        return load_run(self.client, run_id)

    def save(self, record: RunRecord) -> None:
        save_run(self.client, record)

    def run_ids(self) -> list[str]:
        return [_text(r) for r in self.client.lrange(keys.RUN_INDEX, 0, -1)]

    def runs(self) -> list[RunRecord | RunRecordUnreadable]:
        """Every run in submission order; a stored record that does not load stands as its RunRecordUnreadable
        (such a run counts as failed), so one corrupt record cannot hide the others."""
        entries: list[RunRecord | RunRecordUnreadable] = []
        for run_id in self.run_ids():
            try:
                record = self.get(run_id)
            except RunRecordUnreadable as err:
                entries.append(err)
                continue
            if record is not None:
                entries.append(record)
        return entries

    def queued_ids(self) -> list[str]:
        return [_text(r) for r in self.client.lrange(keys.RUN_QUEUE, 0, -1)]

    # --- steps and metrics -----------------------------------------------------------------------------

    def reports_from(self, run_id: str, step: int) -> list[controller_pb2.StepReport]:
        """The stored reports of steps >= `step` (one entry per step, in order): what a replay replaces. Only
        those are read, so a report costs O(1) in the run's length."""
        raw = self.client.lrange(keys.run_steps_key(run_id), max(0, step - 1), -1)
        return [json_format.Parse(r, controller_pb2.StepReport()) for r in raw]

    def append_step(self, report: controller_pb2.StepReport, record: RunRecord) -> None:
        """Store the report (replacing the stored reports of its step and later ones: a resumed trainer replays
        them) and the record it updated, in one MULTI/EXEC: a report cut off by a Redis outage is all there or
        not at all, so the trainer's retry neither loses it nor stores or counts it twice."""
        step = int(report.step)
        metrics = {"step": step, "time": time.time(), **dict(report.metrics)}
        with self.client.pipeline(transaction=True) as pipe:
            for key in (keys.run_steps_key(report.run_id), keys.run_metrics_key(report.run_id)):
                if step <= 1:
                    pipe.delete(key)  # LTRIM 0 -1 would keep everything
                else:
                    pipe.ltrim(key, 0, step - 2)
            pipe.rpush(keys.run_steps_key(report.run_id), json_format.MessageToJson(report, indent=None))
            pipe.rpush(keys.run_metrics_key(report.run_id), json.dumps(metrics))
            save_run(pipe, record)
            pipe.execute()

    def metrics(self, run_id: str, since: int = 0) -> list[dict[str, Any]]:
        """The step metrics after the first `since` entries (entry i is step i + 1)."""
        return [json.loads(r) for r in self.client.lrange(keys.run_metrics_key(run_id), since, -1)]

    def latest_metrics(self, run_id: str) -> dict[str, Any]:
        raw = self.client.lindex(keys.run_metrics_key(run_id), -1)
        return json.loads(raw) if raw else {}

    # --- weight syncs ----------------------------------------------------------------------------------

    def push_syncs(self, pipe: redis.client.Pipeline, run_id: str, syncs: list[WeightSync]) -> None:
        """Append syncs inside the caller's MULTI/EXEC, the one that saves the record counting them."""
        if syncs:
            pipe.rpush(keys.run_syncs_key(run_id), *(sync.model_dump_json() for sync in syncs))

    def syncs(self, run_id: str, since: int = 0) -> list[dict[str, Any]]:
        """The run's weight syncs after the first `since`, oldest first."""
        return [json.loads(r) for r in self.client.lrange(keys.run_syncs_key(run_id), since, -1)]

    def set_sync_reload(self, run_id: str, sync: WeightSync, reload: ReloadSummary) -> bool:
        """Fill in how a stored sync's fan-out went; False when the sync is not (or no longer) stored as given."""
        key, index = keys.run_syncs_key(run_id), sync.sync - 1
        raw = self.client.lindex(key, index)
        stored = WeightSync.model_validate_json(raw) if raw is not None else None
        if stored is None or (stored.sync, stored.policy_version) != (sync.sync, sync.policy_version):
            return False
        self.client.lset(key, index, stored.model_copy(update={"reload": reload}).model_dump_json())
        return True

    # --- eval rounds -----------------------------------------------------------------------------------

    def eval_rounds(self, run_id: str) -> dict[int, EvalRound]:
        """Released eval rounds by the trainer step they evaluate."""
        raw = self.client.hgetall(keys.run_eval_key(run_id))
        rounds = {}
        for field, value in raw.items():
            name = _text(field)
            if name.startswith("round:"):
                rounds[int(name.split(":", 1)[1])] = EvalRound.model_validate_json(value)
        return rounds

    def eval_results(self, run_id: str) -> dict[str, PromptOutcome]:
        """Scored eval prompts by prompt id."""
        raw = self.client.hgetall(keys.run_eval_results_key(run_id))
        return {_text(f): PromptOutcome.model_validate_json(v) for f, v in raw.items()}

    def record_eval_result(self, run_id: str, prompt_id: str, outcome: PromptOutcome) -> bool:
        """Store a scored eval prompt; False when it was already stored (a redelivery)."""
        return bool(self.client.hsetnx(keys.run_eval_results_key(run_id), prompt_id, outcome.model_dump_json()))

    def ensure_groups(self) -> None:
        """Create every stream's consumer group (from the start) so backlog lag is counted before workers join."""
        for stream, group in keys.STREAM_GROUPS.items():
            try:
                self.client.xgroup_create(stream, group, id="0", mkstream=True)
            except redis.ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise

    # --- observability ---------------------------------------------------------------------------------

    def queue_depths(self) -> dict[str, dict[str, int]]:
        """Per stream: lag and pending of its consumer group (core.streams.backlog) and the stream's length.

        Redis < 7 reports no group lag (it reads 0 there); `length` is the fallback signal.
        """
        depths = {}
        for stream, group in keys.STREAM_GROUPS.items():
            depths[stream.rsplit(":", 1)[-1]] = {**backlog(self.client, stream, group),
                                                 "length": int(self.client.xlen(stream))}
        return depths


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
