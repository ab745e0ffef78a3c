"""Sync windows of a running run: which are due under the sync rule, and their release (docs/architecture.md, the
sync rule).

Window w is due once the policy it needs is committed (`spec.window_due`). Its tasks (prompt_tasks.py) and the record
that accounts for them, with any sync they need, are written in one MULTI/EXEC, so a restarted controller
re-derives what is due from the record and releases nothing twice.
"""

from __future__ import annotations

import logging

import redis

from semirl.core import keys
from semirl.core.runstate import RunRecord, save_run
from semirl.core.streams import PAYLOAD_FIELD

from .prompt_tasks import build_window_tasks
from .run_lifecycle import RunLifecycle
from .run_store import RunStore
from .syncs import WeightSyncs
from .views import WeightSync

log = logging.getLogger(__name__)


def due_windows(record: RunRecord) -> list[int]:
    spec = record.spec
    due = []
    for window in range(record.windows_released, spec.num_windows):
        if not spec.window_due(window, record.policy_version):
            break
        due.append(window)
    return due


class WindowRelease:
    def __init__(self, client: redis.Redis, run_store: RunStore, lifecycle: RunLifecycle,
                 syncs: WeightSyncs) -> None:
        self.client = client
        self.run_store = run_store
        self.lifecycle = lifecycle
        self.syncs = syncs

    def release(self, record: RunRecord) -> None:
        spec = record.spec
        synced: list[WeightSync] = []
        if spec.sync.asynchronous and (sync := self.syncs.sync_asynchronous(record)) is not None:
            synced.append(sync)
        due = due_windows(record)
        if synced and not due:  # a due window's release saves the record with its tasks
            with self.client.pipeline(transaction=True) as pipe:
                save_run(pipe, record)
                self.run_store.push_syncs(pipe, record.id, synced)
                pipe.execute()
        for window in due:
            if spec.sync.asynchronous:
                version = record.generation_version
            else:
                version = spec.policy_version_for_step(spec.window_steps(window)[0])
            if window > 0 and version != record.generation_version:
                synced.append(self.syncs.sync(record, version, window))
            tasks = build_window_tasks(record.id, spec, window, self.lifecycle.train_problems(record),
                                       lambda v: self.run_store.policy_path(record, v), newest_version=version)
            record.windows_released = window + 1
            with self.client.pipeline(transaction=True) as pipe:
                for task in tasks:
                    pipe.xadd(keys.PROMPTS, {PAYLOAD_FIELD: task.SerializeToString()})
                save_run(pipe, record)
                self.run_store.push_syncs(pipe, record.id, synced)
                pipe.execute()
            synced = []
            log.info("run %s: window %d released (%d tasks, policy v%d)", record.id, window, len(tasks), version)
