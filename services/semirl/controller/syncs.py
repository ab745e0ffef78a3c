"""Weight syncs: the generators are sent a new policy version, and the run's sync history says how it went.

A sync is recorded (`WeightSync`) with the record that counts it; its Reload fan-out goes out from the
ReloadDispatcher's threads (fanout.py), never under the controller's lock, and its outcome (`ReloadSummary`) is
stored when every generator has answered. While generators still work through an evaluation of an older version,
a sync's fan-out waits for it (decision 47): a Reload now would make each swap to the new version and back for the
rest of that evaluation (v4 -> v0 -> v4). Tasks carry their version, so generators load the new one when they reach
its tasks; the fan-out follows once the evaluation is in, and a newer sync replaces a waiting one.

A version committed in memory (docs/architecture.md, weight transfer) is held by the broadcast's members already:
its sync records their transfers, and its fan-out, for everyone else, waits for the export's commit.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from semirl.core.runstate import RunRecord
from semirl.proto import types_pb2

from .eval_rounds import EvalRounds
from .fanout import ReloadDispatcher, ReloadOutcome
from .run_store import RunStore
from .views import ReloadSummary, TransferView, WeightSync

log = logging.getLogger(__name__)


class WeightSyncs:
    def __init__(self, run_store: RunStore, reloads: ReloadDispatcher, eval_rounds: EvalRounds,
                 lock: threading.RLock) -> None:
        self.run_store = run_store
        self.reloads = reloads
        self.eval_rounds = eval_rounds
        self.lock = lock
        # run id -> the newest sync whose fan-out waits for the evaluation of the version it replaces
        self._deferred: dict[str, tuple[WeightSync, types_pb2.PolicyRef]] = {}
        # run id -> (version, transfers) of the newest commit of a broadcast plan, for the sync that sends it
        self._transfers: dict[str, tuple[int, list[TransferView]]] = {}
        # run id -> the sync of a version held in memory, whose fan-out waits for its export
        self._awaiting_export: dict[str, WeightSync] = {}

    def note_transfers(self, run_id: str, version: int, transfers: list[TransferView]) -> None:
        """How a broadcast of `version` went, from its commit: the sync that sends the version records it."""
        self._transfers[run_id] = (version, transfers)

    def export_written(self, record: RunRecord, version: int) -> None:
        """The export of a version held in memory is committed: fan it out to the generators that lack it."""
        sync = self._awaiting_export.get(record.id)
        if sync is None or sync.policy_version != version:
            return
        del self._awaiting_export[record.id]
        self._send(record, sync, types_pb2.PolicyRef(version=version, path=record.policy_path))

    def sync(self, record: RunRecord, version: int, window: int | None) -> WeightSync:
        """Send the generators `version`; the history entry is for the caller to store with the record."""
        path = self.run_store.policy_path(record, version)
        noted_version, transfers = self._transfers.pop(record.id, (None, []))
        sync = WeightSync(sync=record.syncs + 1, policy_version=version, previous_version=record.generation_version,
                          trainer_step=record.step, window=window, at=time.time(),
                          transport="storage" if path else "broadcast",
                          transfers=transfers if noted_version == version else [])
        record.generation_version = version
        record.syncs = sync.sync
        if not path:  # held in memory by the members; the rest load the export once it is committed
            self._deferred.pop(record.id, None)
            self._awaiting_export[record.id] = sync
            return sync
        self._send(record, sync, types_pb2.PolicyRef(version=version, path=path))
        return sync

    def _send(self, record: RunRecord, sync: WeightSync, policy: types_pb2.PolicyRef) -> None:
        version = sync.policy_version
        if self._evaluating_other_than(record, version):
            self._deferred[record.id] = (sync, policy)
            log.info("run %s: sync %d (v%d) fans out once the evaluations of older versions are in", record.id,
                     sync.sync, version)
        else:
            self._deferred.pop(record.id, None)
            self._fan_out(record.id, sync, policy)

    def sync_asynchronous(self, record: RunRecord) -> WeightSync | None:
        """Asynchronous runs: every commit goes to the generators at once (no window waits for it), but the last:
        no training sample is left to draw with it (its evaluation loads it like any evaluation). The sync, when
        there is one: the record changed, and the caller saves both."""
        if not record.generation_version < record.policy_version < record.spec.train.steps:
            return None
        return self.sync(record, record.policy_version, window=None)

    def send_deferred(self, record: RunRecord) -> None:
        """Fan out the run's waiting sync once no evaluation of another version is in flight."""
        waiting = self._deferred.get(record.id)
        if waiting is None:
            return
        sync, policy = waiting
        if not self._evaluating_other_than(record, sync.policy_version):
            del self._deferred[record.id]
            self._fan_out(record.id, sync, policy)

    def forget(self, run_id: str) -> None:
        self._deferred.pop(run_id, None)
        self._transfers.pop(run_id, None)
        self._awaiting_export.pop(run_id, None)

    def _evaluating_other_than(self, record: RunRecord, version: int) -> bool:
        return any(v != version for v in self.eval_rounds.versions_in_flight(record))

    def _fan_out(self, run_id: str, sync: WeightSync, policy: types_pb2.PolicyRef) -> None:
        self.reloads.request(run_id, policy, on_done=lambda outcomes: self._fanout_done(run_id, sync, outcomes))

    def _fanout_done(self, run_id: str, sync: WeightSync, outcomes: list[ReloadOutcome]) -> None:
        """Store how the sync's fan-out went. The generator's next Reload waits for this, so the controller's lock
        is taken only when the sync is not stored yet (its caller may still be saving it)."""
        loads = [o.seconds for o in outcomes if o.ok]
        summary = ReloadSummary(generators=len(outcomes), ok=len(loads), load_seconds=max(loads, default=None),
                                failed=[f"{o.generator_id}: {o.detail}" for o in outcomes if not o.ok],
                                finished_at=time.time())
        try:
            if not self.run_store.set_sync_reload(run_id, sync, summary):
                with self.lock:
                    self.run_store.set_sync_reload(run_id, sync, summary)
        except redis.RedisError as err:
            log.warning("run %s: cannot store how sync %d went: %s", run_id, sync.sync, err)
