"""The controller's engine: activates queued runs one at a time and advances the running one (docs/architecture.md,
the controller). It composes the parts, each in its own module, and owns the loop and the lock:

- run_store.py: records, queue, metrics, sync history and eval bookkeeping in Redis;
- run_lifecycle.py: activation, ending, unreadable records, the datasets a run holds;
- windows.py: due sync windows and their release (their tasks built by prompt_tasks.py);
- syncs.py: weight syncs and their fan-out;
- commits.py: CommitCheckpoint and retention; step_reports.py: ReportStep;
- eval_rounds.py: evaluation rounds, their results and the best checkpoint.

All state is in Redis, so a restarted controller re-derives what is due from the active record: `schedule()` is
idempotent and releases whatever is due but not yet released. Every mutation runs under one lock (gRPC handlers,
REST handlers and the loop thread share this object); nothing slow runs under it: Reloads go out from the
ReloadDispatcher's threads, and a submitted run starts on the loop's next round, not in the POST. Ticks that keep
failing are counted, and /readyz reports them (`tick_problem`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import redis

from semirl.core import keys
from semirl.core.runstate import RunRecord, RunRecordUnreadable, active_run_id
from semirl.core.streams import trim_consumed
from semirl.proto import controller_pb2
from semirl.spec import RunSpec

from .commits import Commits
from .discovery import Discovery, RedisDiscovery
from .eval_rounds import EvalRounds
from .fanout import ReloadDispatcher, ReloadOutcome, generator_statuses
from .run_lifecycle import RunLifecycle
from .run_store import RunStore
from .step_reports import StepReports
from .syncs import WeightSyncs
from .views import TransferView
from .windows import WindowRelease

log = logging.getLogger(__name__)

STREAM_RETENTION_ENV = "SEMIRL_STREAM_RETENTION_S"
DEFAULT_STREAM_RETENTION_S = 600.0  # consumed entries and a finished run's idempotency sets stay this long
DEFAULT_TRANSFER_TIMEOUT_S = 120.0  # a broadcast member not done by then is dropped (16 GB at 8B: ~3 s on TCP)
STATUS_TIMEOUT_S = 3.0


class Controller:
    """Everything of the controller but the transport (REST in app.py, gRPC in grpc_api.py)."""

    def __init__(
        self,
        client: redis.Redis,
        store: Path | str,
        *,
        consumer: str = "controller-0",
        reload_timeout_s: float = 60.0,
        poll_s: float = 0.5,
        discovery: Discovery | None = None,
        retry_s: float = 1.0,
        unready_after_failures: int = 3,
        stream_retention_s: float | None = None,
        trim_every_s: float = 30.0,
        transfer_timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S,
    ) -> None:
        self.client = client
        self.discovery: Discovery = discovery if discovery is not None else RedisDiscovery(client)
        self.run_store = RunStore(client, store)
        self.run_store.ensure_groups()
        self.lock = threading.RLock()
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.unready_after_failures = unready_after_failures
        if stream_retention_s is None:
            stream_retention_s = float(os.environ.get(STREAM_RETENTION_ENV, DEFAULT_STREAM_RETENTION_S))
        self.stream_retention_s = stream_retention_s
        self.trim_every_s = trim_every_s
        self._next_trim = 0.0
        self.tick_failures = 0  # consecutive failed ticks of the loop
        self.last_tick_error: str | None = None
        self._wake = threading.Event()  # a run was queued or ended: the next one may start
        self.reloads = ReloadDispatcher(client, lambda: self.discovery.endpoints("generator"),
                                        timeout_s=reload_timeout_s)
        self.lifecycle = RunLifecycle(client, self.run_store, stream_retention_s=stream_retention_s, wake=self._wake)
        self.eval_rounds = EvalRounds(client, self.run_store, self.lifecycle, consumer=consumer)
        self.syncs = WeightSyncs(self.run_store, self.reloads, self.eval_rounds, self.lock)
        self.lifecycle.on_ended.append(self.syncs.forget)
        self.windows = WindowRelease(client, self.run_store, self.lifecycle, self.syncs)
        self.commits = Commits(self.run_store, self.lifecycle, self.eval_rounds, self.syncs, self._advance, self._wake)
        self.transfer_timeout_s = transfer_timeout_s
        self.step_reports = StepReports(self.run_store, self.lifecycle, lambda: self.last_reload)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle of the loop -------------------------------------------------------------------------

    def start(self) -> None:
        self.discovery.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="controller-scheduler", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.reloads.stop()
        self.discovery.stop()

    @property
    def last_reload(self) -> list[ReloadOutcome]:
        """How the newest Reload fan-out went so far (generators still loading are not in it yet)."""
        return self.reloads.last_outcomes

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick(block_ms=int(self.poll_s * 1000))
            except redis.RedisError as err:
                log.warning("redis unavailable: %s", err)
                self._tick_failed(err)
            except Exception as err:
                log.exception("scheduler tick failed")
                self._tick_failed(err)
            else:
                self.tick_failures = 0

    def _tick_failed(self, err: Exception) -> None:
        self.tick_failures += 1
        self.last_tick_error = f"{type(err).__name__}: {err}"
        self._stop.wait(self.retry_s)

    def tick_problem(self) -> str | None:
        """Why the loop is not doing its work although its thread runs: its ticks keep failing (None: fine)."""
        failures = self.tick_failures
        if failures < self.unready_after_failures:
            return None
        return f"scheduler ticks failing ({failures} in a row): {self.last_tick_error}"

    def tick(self, block_ms: int = 0) -> None:
        """One round of the loop: activate/advance, take in scored eval groups (without blocking when a
        submit is waiting for the next round), and now and then trim the streams."""
        self._wake.clear()
        self.schedule()
        self.consume_evals(block_ms=0 if self._wake.is_set() else block_ms)
        if time.monotonic() >= self._next_trim:
            self._next_trim = time.monotonic() + self.trim_every_s
            trimmed = self.trim_streams()
            if trimmed:
                log.info("trimmed %d consumed stream entries", trimmed)

    # --- the public operations -------------------------------------------------------------------------

    def submit(self, spec: RunSpec) -> RunRecord:
        """Queue a validated spec (see submission.validate_spec). The run starts on the loop's next round, not
        here: building its first window (up to a million prompts) stays off the request path."""
        with self.lock:
            record = self.run_store.create(spec)
        log.info("run %s queued", record.id)
        self._wake.set()
        return record

    def cancel(self, run_id: str) -> RunRecord | None:
        """Cancel a queued or running run; raises RunRecordUnreadable for a record that does not load (after
        taking it out of the queue: such a run is failed already)."""
        with self.lock:
            try:
                record = self.run_store.get(run_id)
            except RunRecordUnreadable as err:
                self.lifecycle.drop_unreadable(err)
                raise
            if record is None or record.finished:
                return record
            self.lifecycle.end(record, "cancelled")
            return record

    def fail(self, run_id: str, error: str) -> bool:
        """FailRun: the trainer cannot make progress. False for an unknown or already finished run."""
        with self.lock:
            record = self.lifecycle.readable(run_id)
            if record is None or record.state not in ("running", "queued"):
                return False
            self.lifecycle.end(record, "failed", error or "failed in the trainer")
            return True

    def commit(self, run_id: str, version: int, path: str, final: bool, *, in_memory: bool = False,
               transfers: list[TransferView] | None = None) -> tuple[bool, str]:
        """CommitCheckpoint (commits.py)."""
        with self.lock:
            if in_memory:
                return self.commits.commit_in_memory(run_id, version, transfers or [])
            return self.commits.commit(run_id, version, path, final, transfers)

    def plan_weight_sync(self, run_id: str, version: int) -> controller_pb2.WeightSyncPlan:
        """PlanWeightSync: broadcast to every generator with an engine built (asked outside the lock; one built for
        another run, or that served none of this one yet, loads the run's export in place before it joins), unless
        the spec says storage or an evaluation of another version is in flight (its generators would swap back
        and forth; decision 47)."""
        def storage(reason: str) -> controller_pb2.WeightSyncPlan:
            log.info("run %s: v%d through storage: %s", run_id, version, reason)
            return controller_pb2.WeightSyncPlan(transport="storage", reason=reason)

        with self.lock:
            record = self.lifecycle.readable(run_id)
            if record is None or record.state != "running":
                return storage("the run is not running")
            if record.spec.sync.transport != "broadcast":
                return storage("sync.transport is storage")
            if version <= record.policy_version:
                return storage(f"v{version} is committed already")
            evaluating = self.eval_rounds.versions_in_flight(record)
            if evaluating:
                return storage(f"an evaluation of v{min(evaluating)} is in flight")
            endpoints = self.discovery.endpoints("generator")
        members = [controller_pb2.SyncMember(generator_id=status.generator_id, address=endpoints[status.generator_id])
                   for status in sorted(generator_statuses(endpoints, STATUS_TIMEOUT_S), key=lambda s: s.generator_id)
                   if status.engine_ready and status.generator_id in endpoints]
        if not members:
            return storage("no generator has an engine built")
        return controller_pb2.WeightSyncPlan(transport="broadcast", members=members,
                                             timeout_s=self.transfer_timeout_s)

    def report_step(self, report: controller_pb2.StepReport) -> bool:
        """ReportStep (step_reports.py): True when the trainer should stop (run cancelled)."""
        with self.lock:
            return self.step_reports.report(report)

    # --- scheduling ------------------------------------------------------------------------------------

    def schedule(self) -> None:
        """Advance the active run; when none is running, activate the next queued run."""
        with self.lock:
            for _ in range(1000):
                run_id = active_run_id(self.client)
                record = self.lifecycle.readable(run_id) if run_id else None
                if record is not None and record.state == "running":
                    self._advance(record)
                    if record.state == "running":
                        return
                    continue
                if run_id:
                    self.client.delete(keys.ACTIVE_RUN)
                if not self.lifecycle.activate_next():
                    return

    def _advance(self, record: RunRecord) -> None:
        """Release every due window and eval round of a running run; finish it when all is in."""
        self.windows.release(record)
        self.eval_rounds.release(record)
        self.syncs.send_deferred(record)
        self.lifecycle.finish_if_done(record)

    def consume_evals(self, block_ms: int = 0) -> int:
        """Take in scored eval groups; append an EvalResult for every (round, set) whose prompts are all in."""
        read, touched = self.eval_rounds.take_in(block_ms)
        if touched:
            with self.lock:
                for run_id in touched:
                    self.eval_rounds.collect(run_id)
                self.schedule()
        return read

    def trim_streams(self) -> int:
        """Delete stream entries every group has acked and that are older than the retention period."""
        return sum(trim_consumed(self.client, stream, self.stream_retention_s) for stream in keys.STREAM_GROUPS)

    # --- views -----------------------------------------------------------------------------------------

    def view(self, record: RunRecord) -> dict[str, Any]:
        """The record as GET /v1/runs/{id} shows it, with metrics, queue depths and each service's replicas."""
        body = record.model_dump(mode="json")
        body["latest_metrics"] = self.run_store.latest_metrics(record.id)
        body["queues"] = self.run_store.queue_depths()
        body.update(self.services_view())
        if record.state == "queued":
            queued = self.run_store.queued_ids()
            body["queue_position"] = queued.index(record.id) if record.id in queued else None
        return body

    def services_view(self) -> dict[str, Any]:
        """Ready replicas per service, the generators a Reload goes to, and how the last Reload went."""
        view: dict[str, Any] = {"discovery": self.discovery.source}
        try:
            view["replicas"] = self.discovery.replicas()
            view["generators"] = self.discovery.endpoints("generator")
        except Exception as err:  # noqa: BLE001 - the run view must not fail because discovery does
            view["replicas"], view["generators"] = {}, {}
            view["discovery_error"] = str(err)
        view["last_reload"] = [
            {"generator": o.generator_id, "endpoint": o.endpoint, "ok": o.ok, "detail": o.detail}
            for o in self.last_reload
        ]
        return view
