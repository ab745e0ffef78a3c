"""A run's life in the controller: activation from the queue, its end (cancelled, failed, succeeded), records that do
not load, and the datasets a running run holds in memory.

A stored record that does not load (RunRecordUnreadable) counts as a failed run: it is taken out of the queue and
ACTIVE_RUN and the next run goes on, its bytes left in Redis for inspection. When a run ends, its datasets leave
memory and, after the retention period (so that a late redelivery is still recognised), its idempotency sets and
per-prompt eval results leave Redis. Called under the controller's lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from semirl.core import keys
from semirl.core.runstate import RunRecord, RunRecordUnreadable, active_run_id, save_run
from semirl.data.problems import Problem, load_problems
from semirl.spec import DatasetSpec

from .run_store import RunStore

log = logging.getLogger(__name__)


class RunLifecycle:
    def __init__(self, client: redis.Redis, run_store: RunStore, *, stream_retention_s: float,
                 wake: threading.Event) -> None:
        self.client = client
        self.run_store = run_store
        self.stream_retention_s = stream_retention_s
        self.wake = wake  # set when a run ends: the next queued run starts on the loop's next round
        self.on_ended: list[Callable[[str], None]] = []  # what other parts drop of an ended run
        self._problems: dict[tuple[str, str], list[Problem]] = {}  # (run id, "train" or "eval:<set>")
        self._unreadable_seen: set[str] = set()

    # --- records -----------------------------------------------------------------------------------------

    def readable(self, run_id: str) -> RunRecord | None:
        """The run's record, or None when it is unknown or does not load (then it is dropped, see below)."""
        try:
            return self.run_store.get(run_id)
        except RunRecordUnreadable as err:
            self.drop_unreadable(err)
            return None

    def drop_unreadable(self, err: RunRecordUnreadable) -> None:
        """An unreadable record cannot be rewritten (its spec is lost), so it stays as it is and counts as
        failed; what the scheduler holds of it goes, so the next run can start."""
        run_id = err.run_id
        self.client.lrem(keys.RUN_QUEUE, 0, run_id)
        if active_run_id(self.client) == run_id:
            self.client.delete(keys.ACTIVE_RUN)
        self.run_ended(run_id)
        if run_id not in self._unreadable_seen:
            if len(self._unreadable_seen) > 10_000:
                self._unreadable_seen.clear()
            self._unreadable_seen.add(run_id)
            log.error("run %s failed: %s", run_id, err)

    # --- datasets ----------------------------------------------------------------------------------------

    def _load(self, record: RunRecord, which: str, dataset: DatasetSpec) -> list[Problem]:
        key = (record.id, which)
        if key not in self._problems:
            self._problems[key] = load_problems(dataset)
        return self._problems[key]

    def train_problems(self, record: RunRecord) -> list[Problem]:
        return self._load(record, "train", record.spec.data.train)

    def eval_problems(self, record: RunRecord) -> dict[str, list[Problem]]:
        """The rows of every evaluation set, by set name."""
        return {str(dataset.name): self._load(record, f"eval:{dataset.name}", dataset)
                for dataset in record.spec.data.eval}

    # --- start and end -----------------------------------------------------------------------------------

    def activate_next(self) -> bool:
        """Start the first queued run (the caller advances it); False when the queue is empty."""
        while True:
            head = self.client.lindex(keys.RUN_QUEUE, 0)
            if head is None:
                return False
            run_id = head.decode() if isinstance(head, bytes) else head
            record = self.readable(run_id)
            if record is None or record.state != "queued":
                self.client.lrem(keys.RUN_QUEUE, 1, run_id)
                continue
            break
        record.started_at = time.time()
        record.policy_version = 0
        record.policy_path = record.spec.model.path
        record.generation_version = 0
        record.windows_released = 0
        try:
            if not record.spec.static_preferences:  # a preference set is the trainer's to read
                self.train_problems(record)
            self.eval_problems(record)
        except (OSError, ValueError) as err:
            record.state = "failed"
            record.error = f"cannot read the dataset: {err}"
            record.finished_at = time.time()
            with self.client.pipeline(transaction=True) as pipe:
                pipe.lrem(keys.RUN_QUEUE, 1, run_id)
                save_run(pipe, record)
                pipe.execute()
            log.error("run %s failed to start: %s", run_id, err)
            return True
        record.state = "running"
        with self.client.pipeline(transaction=True) as pipe:
            pipe.lrem(keys.RUN_QUEUE, 1, run_id)
            pipe.set(keys.ACTIVE_RUN, run_id)
            save_run(pipe, record)
            pipe.execute()
        log.info("run %s running (sync interval %s, %d steps)", run_id, record.spec.sync.interval,
                 record.spec.train.steps)
        return True

    def end(self, record: RunRecord, state: str, error: str | None = None) -> None:
        """Move a queued or running run to a terminal state and free ACTIVE_RUN; the loop starts the next run."""
        record.state = state
        if error is not None:
            record.error = error
        record.finished_at = time.time()
        with self.client.pipeline(transaction=True) as pipe:
            save_run(pipe, record)
            pipe.lrem(keys.RUN_QUEUE, 0, record.id)
            pipe.execute()
        if active_run_id(self.client) == record.id:
            self.client.delete(keys.ACTIVE_RUN)
        self.run_ended(record.id)
        if error is None:
            log.info("run %s %s", record.id, state)
        else:
            log.error("run %s %s: %s", record.id, state, error)
        self.wake.set()

    def finish_if_done(self, record: RunRecord) -> None:
        """A running run whose final checkpoint is committed and whose every evaluation is in has succeeded."""
        if record.state != "running" or record.final_path is None:
            return
        evaluated = {(e.step, e.eval_set) for e in record.evals}
        due = {(step, dataset.name) for step in record.spec.eval_steps() for dataset in record.spec.data.eval}
        if not due <= evaluated:
            return
        record.state = "succeeded"
        record.finished_at = time.time()
        with self.client.pipeline(transaction=True) as pipe:
            save_run(pipe, record)
            pipe.execute()
        if active_run_id(self.client) == record.id:
            self.client.delete(keys.ACTIVE_RUN)
        self.run_ended(record.id)
        log.info("run %s succeeded", record.id)

    def run_ended(self, run_id: str) -> None:
        """Drop what a finished run holds: its datasets in memory, and (after the retention period, so that a
        late redelivery is still recognised) its idempotency sets and per-prompt eval results in Redis."""
        for key in [key for key in self._problems if key[0] == run_id]:
            del self._problems[key]
        for forget in self.on_ended:
            forget(run_id)
        retention = max(1, int(self.stream_retention_s))
        with self.client.pipeline(transaction=False) as pipe:
            for stage in keys.DONE_STAGES:
                pipe.expire(keys.done_key(run_id, stage), retention)
            pipe.expire(keys.run_eval_results_key(run_id), retention)  # summed up in the record's evals
            pipe.execute()
