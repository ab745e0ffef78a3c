"""The run loop: activates queued runs one at a time, releases sync windows and eval rounds, commits
checkpoints, fans out reloads, collects eval results and finishes runs (docs/architecture.md, the design in brief).

All state is in Redis (run records, queue, ACTIVE_RUN, the eval hash), so a restarted controller re-derives
what is due from the active record: `schedule()` is idempotent and releases whatever is due but not yet
released. Task releases and the record update that accounts for them are written in one MULTI/EXEC.
Every mutation runs under one lock (gRPC handlers, REST handlers and the loop thread share this object);
nothing slow runs under it: Reloads go out from the ReloadDispatcher's threads, and a submitted run starts on
the loop's next round, not in the POST.

A stored record that does not load (RunRecordUnreadable) counts as a failed run: the scheduler takes it out
of the queue and ACTIVE_RUN and goes on with the next run, leaving its bytes in Redis for inspection. Ticks
that keep failing for any other reason are counted, and /readyz reports them (`tick_problem`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from semirl.core import keys
from semirl.core.checkpoints import CheckpointError, staged_copy, verify
from semirl.core.runstate import BestCheckpoint, EvalResult, RunRecord, RunRecordUnreadable, active_run_id, save_run
from semirl.core.streams import PAYLOAD_FIELD, StreamQueue, trim_consumed
from semirl.proto import controller_pb2, types_pb2
from semirl.spec import DatasetSpec, RunSpec
from semirl.tasks.dataset import Problem, load_problems

from .discovery import Discovery, RedisDiscovery
from .evaluation import EvalRound, SetRound, outcome_of, summarize
from .fanout import ReloadDispatcher, ReloadOutcome
from .registry import Registry
from .views import ReloadSummary, WeightSync
from .windows import build_eval_tasks, build_window_tasks

log = logging.getLogger(__name__)

STREAM_RETENTION_ENV = "SEMIRL_STREAM_RETENTION_S"
DEFAULT_STREAM_RETENTION_S = 600.0  # consumed entries and a finished run's idempotency sets stay this long


class Controller:
    """The controller's engine: everything but the transport (REST in app.py, gRPC in grpc_api.py)."""

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
    ) -> None:
        self.client = client
        self.discovery: Discovery = discovery if discovery is not None else RedisDiscovery(client)
        self.registry = Registry(client, store)
        self.registry.ensure_groups()
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
        self._unreadable_seen: set[str] = set()
        self.eval_queue = StreamQueue(client, keys.EVAL_SCORED, keys.CONTROLLER_GROUP, consumer, types_pb2.ScoredGroup)
        self.reloads = ReloadDispatcher(client, lambda: self.discovery.endpoints("generator"),
                                        timeout_s=reload_timeout_s)
        self._wake = threading.Event()  # a run was queued or ended: the next one may start
        self._problems: dict[tuple[str, str], list[Problem]] = {}  # (run id, "train" or "eval:<set>")
        # run id -> the newest sync whose fan-out waits for the evaluation of the version it replaces (_sync)
        self._deferred_reloads: dict[str, tuple[WeightSync, types_pb2.PolicyRef]] = {}
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
        """Queue a validated spec (see registry.validate_spec). The run starts on the loop's next round, not
        here: building its first window (up to a million prompts) stays off the request path."""
        with self.lock:
            record = self.registry.create(spec)
        log.info("run %s queued", record.id)
        self._wake.set()
        return record

    def cancel(self, run_id: str) -> RunRecord | None:
        """Cancel a queued or running run; raises RunRecordUnreadable for a record that does not load (after
        taking it out of the queue: such a run is failed already)."""
        with self.lock:
            try:
                record = self.registry.get(run_id)
            except RunRecordUnreadable as err:
                self._drop_unreadable(err)
                raise
            if record is None or record.finished:
                return record
            self._end(record, "cancelled")
            return record

    def fail(self, run_id: str, error: str) -> bool:
        """FailRun: the trainer cannot make progress. False for an unknown or already finished run."""
        with self.lock:
            record = self._readable(run_id)
            if record is None or record.state not in ("running", "queued"):
                return False
            self._end(record, "failed", error or "failed in the trainer")
            return True

    def _end(self, record: RunRecord, state: str, error: str | None = None) -> None:
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
        self._run_ended(record.id)
        if error is None:
            log.info("run %s %s", record.id, state)
        else:
            log.error("run %s %s: %s", record.id, state, error)
        self._wake.set()  # the next queued run starts on the loop's next round

    def commit(self, run_id: str, version: int, path: str, final: bool) -> tuple[bool, str]:
        """CommitCheckpoint: verify, record, advance (reload + next window, eval rounds, success), retain."""
        with self.lock:
            record = self._readable(run_id)
            if record is None:
                return False, f"unknown or unreadable run {run_id}"
            if record.state != "running":
                if record.state == "succeeded" and version <= record.policy_version:
                    return True, ""
                return False, f"run {run_id} is {record.state}"
            spec = record.spec
            checkpoints = self.registry.checkpoints(record)
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
            self.registry.save(record)
            log.info("run %s: committed v%d%s", run_id, version, " (final)" if final else "")
            self._advance(record)
            protect = {record.generation_version, record.policy_version} | self._eval_versions_in_flight(record)
            removed = checkpoints.retain(spec.checkpoint.keep, protect)
            if removed:
                log.info("run %s: retention removed versions %s", run_id, removed)
            self._wake.set()
            return True, ""

    def report_step(self, report: controller_pb2.StepReport) -> bool:
        """ReportStep: store the report and metrics; True when the trainer should stop (run cancelled)."""
        with self.lock:
            record = self._readable(report.run_id)
            if record is None:
                return True
            if record.state in ("cancelled", "failed"):
                return True
            counters = Counter(record.counters)  # kept incrementally: a report costs O(1) in the run's length
            if report.step <= record.step:  # a resumed trainer replays the steps after its checkpoint
                for replaced in self.registry.reports_from(report.run_id, int(report.step)):
                    counters.subtract(_group_outcome(group) for group in replaced.groups)
            self._add_reload_time(record.spec, report)
            counters.update(_group_outcome(group) for group in report.groups)
            record.step = int(report.step)
            record.resumed_from_step = max(record.resumed_from_step, int(report.resumed_from_step))
            record.counters = {name: count for name, count in counters.items() if count}
            self.registry.append_step(report, record)
            return False

    def _add_reload_time(self, spec: RunSpec, report: controller_pb2.StepReport) -> None:
        """The first step trained on a newly synced version gets `reload_s`: the slowest generator's load of it
        (the trainer cannot see reloads; with its own timings this completes the step's breakdown)."""
        step = int(report.step)
        version = spec.policy_version_for_step(step)
        if version == 0 or version != step - 1:
            return
        loads = [o.seconds for o in self.last_reload if o.ok and o.run_id == report.run_id and o.version == version]
        if loads:
            report.metrics["reload_s"] = max(loads)

    # --- scheduling ------------------------------------------------------------------------------------

    def schedule(self) -> None:
        """Advance the active run; when none is running, activate the next queued run."""
        with self.lock:
            for _ in range(1000):
                run_id = active_run_id(self.client)
                record = self._readable(run_id) if run_id else None
                if record is not None and record.state == "running":
                    self._advance(record)
                    if record.state == "running":
                        return
                    continue
                if run_id:
                    self.client.delete(keys.ACTIVE_RUN)
                if not self._activate_next():
                    return

    def _activate_next(self) -> bool:
        """Start the first queued run; False when the queue is empty."""
        while True:
            head = self.client.lindex(keys.RUN_QUEUE, 0)
            if head is None:
                return False
            run_id = head.decode() if isinstance(head, bytes) else head
            record = self._readable(run_id)
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
                self._train_problems(record)
            self._eval_problems(record)
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
        self._advance(record)
        return True

    def _readable(self, run_id: str) -> RunRecord | None:
        """The run's record, or None when it is unknown or does not load (then it is dropped, see below)."""
        try:
            return self.registry.get(run_id)
        except RunRecordUnreadable as err:
            self._drop_unreadable(err)
            return None

    def _drop_unreadable(self, err: RunRecordUnreadable) -> None:
        """An unreadable record cannot be rewritten (its spec is lost), so it stays as it is and counts as
        failed; what the scheduler holds of it goes, so the next run can start."""
        run_id = err.run_id
        self.client.lrem(keys.RUN_QUEUE, 0, run_id)
        if active_run_id(self.client) == run_id:
            self.client.delete(keys.ACTIVE_RUN)
        self._run_ended(run_id)
        if run_id not in self._unreadable_seen:
            if len(self._unreadable_seen) > 10_000:
                self._unreadable_seen.clear()
            self._unreadable_seen.add(run_id)
            log.error("run %s failed: %s", run_id, err)

    def _load(self, record: RunRecord, which: str, dataset: DatasetSpec) -> list[Problem]:
        key = (record.id, which)
        if key not in self._problems:
            self._problems[key] = load_problems(dataset)
        return self._problems[key]

    def _train_problems(self, record: RunRecord) -> list[Problem]:
        return self._load(record, "train", record.spec.data.train)

    def _eval_problems(self, record: RunRecord) -> dict[str, list[Problem]]:
        """The rows of every evaluation set, by set name."""
        return {str(dataset.name): self._load(record, f"eval:{dataset.name}", dataset)
                for dataset in record.spec.data.eval}

    def _run_ended(self, run_id: str) -> None:
        """Drop what a finished run holds: its datasets in memory, and (after the retention period, so that a
        late redelivery is still recognised) its idempotency sets and per-prompt eval results in Redis."""
        for key in [key for key in self._problems if key[0] == run_id]:
            del self._problems[key]
        self._deferred_reloads.pop(run_id, None)
        retention = max(1, int(self.stream_retention_s))
        with self.client.pipeline(transaction=False) as pipe:
            for stage in keys.DONE_STAGES:
                pipe.expire(keys.done_key(run_id, stage), retention)
            pipe.expire(keys.run_eval_results_key(run_id), retention)  # summed up in the record's evals
            pipe.execute()

    def trim_streams(self) -> int:
        """Delete stream entries every group has acked and that are older than the retention period."""
        return sum(trim_consumed(self.client, stream, self.stream_retention_s) for stream in keys.STREAM_GROUPS)

    def _policy_path(self, record: RunRecord, version: int) -> str:
        if version == 0:
            return record.spec.model.path
        return str(self.registry.checkpoints(record).policy_dir(version))

    def _advance(self, record: RunRecord) -> None:
        """Release every due window and eval round of a running run; finish it when all is in."""
        self._release_windows(record)
        self._release_eval_rounds(record)
        self._send_deferred_reload(record)
        self._finish_if_done(record)

    def _due_windows(self, record: RunRecord) -> list[int]:
        spec = record.spec
        due = []
        for window in range(record.windows_released, spec.num_windows):
            if not spec.window_due(window, record.policy_version):
                break
            due.append(window)
        return due

    def _sync_asynchronous(self, record: RunRecord) -> WeightSync | None:
        """Asynchronous runs: every commit goes to the generators at once (no window waits for it), but the last:
        no training sample is left to draw with it (its evaluation loads it like any evaluation). The sync, when
        there is one: the record changed, and the caller saves both."""
        if not record.generation_version < record.policy_version < record.spec.train.steps:
            return None
        return self._sync(record, record.policy_version, window=None)

    def _sync(self, record: RunRecord, version: int, window: int | None) -> WeightSync:
        """Send the generators `version`; the history entry is for the caller to store with the record."""
        sync = WeightSync(sync=record.syncs + 1, policy_version=version, previous_version=record.generation_version,
                          trainer_step=record.step, window=window, at=time.time())
        record.generation_version = version
        record.syncs = sync.sync
        policy = types_pb2.PolicyRef(version=version, path=self._policy_path(record, version))
        if self._evaluating_other_than(record, version):
            # Generators are still working through an evaluation of an older version; a Reload now would make
            # each swap to the new version and back for the rest of it (v4 -> v0 -> v4). Tasks carry their
            # version, so generators load the new one when they reach its tasks; the fan-out follows once that
            # evaluation is in (_send_deferred_reload), and a newer sync replaces a waiting one.
            self._deferred_reloads[record.id] = (sync, policy)
            log.info("run %s: sync %d (v%d) fans out once the evaluations of older versions are in", record.id,
                     sync.sync, version)
        else:
            self._deferred_reloads.pop(record.id, None)
            self._fan_out(record.id, sync, policy)
        return sync

    def _fan_out(self, run_id: str, sync: WeightSync, policy: types_pb2.PolicyRef) -> None:
        self.reloads.request(run_id, policy, on_done=lambda outcomes: self._fanout_done(run_id, sync, outcomes))

    def _send_deferred_reload(self, record: RunRecord) -> None:
        waiting = self._deferred_reloads.get(record.id)
        if waiting is None:
            return
        sync, policy = waiting
        if not self._evaluating_other_than(record, sync.policy_version):
            del self._deferred_reloads[record.id]
            self._fan_out(record.id, sync, policy)

    def _evaluating_other_than(self, record: RunRecord, version: int) -> bool:
        return any(v != version for v in self._eval_versions_in_flight(record))

    def _fanout_done(self, run_id: str, sync: WeightSync, outcomes: list[ReloadOutcome]) -> None:
        """Store how the sync's fan-out went. The generator's next Reload waits for this, so the controller's lock
        is taken only when the sync is not stored yet (its caller may still be saving it)."""
        loads = [o.seconds for o in outcomes if o.ok]
        summary = ReloadSummary(generators=len(outcomes), ok=len(loads), load_seconds=max(loads, default=None),
                                failed=[f"{o.generator_id}: {o.detail}" for o in outcomes if not o.ok],
                                finished_at=time.time())
        try:
            if not self.registry.set_sync_reload(run_id, sync, summary):
                with self.lock:
                    self.registry.set_sync_reload(run_id, sync, summary)
        except redis.RedisError as err:
            log.warning("run %s: cannot store how sync %d went: %s", run_id, sync.sync, err)

    def _release_windows(self, record: RunRecord) -> None:
        spec = record.spec
        synced: list[WeightSync] = []
        if spec.sync.asynchronous and (sync := self._sync_asynchronous(record)) is not None:
            synced.append(sync)
        due = self._due_windows(record)
        if synced and not due:  # a due window's release saves the record with its tasks
            with self.client.pipeline(transaction=True) as pipe:
                save_run(pipe, record)
                self.registry.push_syncs(pipe, record.id, synced)
                pipe.execute()
        for window in due:
            if spec.sync.asynchronous:
                version = record.generation_version
            else:
                version = spec.policy_version_for_step(spec.window_steps(window)[0])
            if window > 0 and version != record.generation_version:
                synced.append(self._sync(record, version, window))
            tasks = build_window_tasks(record.id, spec, window, self._train_problems(record),
                                       lambda v: self._policy_path(record, v), newest_version=version)
            record.windows_released = window + 1
            with self.client.pipeline(transaction=True) as pipe:
                for task in tasks:
                    pipe.xadd(keys.PROMPTS, {PAYLOAD_FIELD: task.SerializeToString()})
                save_run(pipe, record)
                self.registry.push_syncs(pipe, record.id, synced)
                pipe.execute()
            synced = []
            log.info("run %s: window %d released (%d tasks, policy v%d)", record.id, window, len(tasks), version)

    def _release_eval_rounds(self, record: RunRecord) -> None:
        spec = record.spec
        if not spec.data.eval:
            return
        released = self.registry.eval_rounds(record.id)
        for index, step in enumerate(spec.eval_steps()):
            if step in released:
                continue
            if step == 0:
                version, path = 0, spec.model.path
            elif step == spec.train.steps:
                if record.final_path is None:
                    continue
                version, path = record.policy_version, record.policy_path
            elif 0 < step <= record.policy_version:
                version, path = record.policy_version, record.policy_path
            else:
                continue
            policy = types_pb2.PolicyRef(version=version, path=path)
            tasks = build_eval_tasks(record.id, spec, step, index, self._eval_problems(record), policy)
            released_round = EvalRound(policy_version=version, policy_path=path)
            for task in tasks:
                counted = released_round.sets.setdefault(
                    task.eval_set, SetRound(prompts=0, samples_per_prompt=task.sampling.n))
                counted.prompts += 1
            with self.client.pipeline(transaction=True) as pipe:
                for task in tasks:
                    pipe.xadd(keys.PROMPTS, {PAYLOAD_FIELD: task.SerializeToString()})
                pipe.hset(keys.run_eval_key(record.id), f"round:{step}", released_round.model_dump_json())
                pipe.execute()
            log.info("run %s: eval round for step %d released (%d prompts in %d sets, policy v%d)",
                     record.id, step, len(tasks), len(released_round.sets), version)

    def _eval_versions_in_flight(self, record: RunRecord) -> set[int]:
        done = {(e.step, e.eval_set) for e in record.evals}
        return {released.policy_version for step, released in self.registry.eval_rounds(record.id).items()
                if any((step, name) not in done for name in released.sets)}

    def _finish_if_done(self, record: RunRecord) -> None:
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
        self._run_ended(record.id)
        log.info("run %s succeeded", record.id)

    # --- evaluation results ----------------------------------------------------------------------------

    def consume_evals(self, block_ms: int = 0) -> int:
        """Take in scored eval groups; append an EvalResult for every (round, set) whose prompts are all in."""
        # XREADGROUP's BLOCK 0 means "forever": no block argument at all is the non-blocking read.
        deliveries = self.eval_queue.read(count=256, block_ms=block_ms if block_ms > 0 else None)  # type: ignore[arg-type]
        touched: set[str] = set()
        for delivery in deliveries:
            task = delivery.message.group.task
            if task.purpose == types_pb2.TASK_PURPOSE_EVAL and self.client.exists(keys.run_key(task.run_id)):
                self.registry.record_eval_result(task.run_id, task.prompt_id, outcome_of(delivery.message))
                touched.add(task.run_id)
        self.eval_queue.ack(d.entry_id for d in deliveries)
        if touched:
            with self.lock:
                for run_id in touched:
                    self._collect_evals(run_id)
                self.schedule()
        return len(deliveries)

    def _collect_evals(self, run_id: str) -> None:
        record = self._readable(run_id)
        if record is None or record.finished:
            return
        done = {(e.step, e.eval_set) for e in record.evals}
        results = list(self.registry.eval_results(run_id).values())
        changed = False
        for step, released in sorted(self.registry.eval_rounds(run_id).items()):
            for name, expected in released.sets.items():
                if (step, name) in done:
                    continue
                got = [r for r in results if r.eval_step == step and r.eval_set == name]
                if len(got) < expected.prompts:
                    continue
                result = summarize(step, name, released.policy_version, expected, got)
                record.evals.append(result)
                self._keep_if_best(record, result, released.policy_path)
                changed = True
                log.info("run %s: eval of step %d on %s: accuracy %.3f ± %s (%d of %d prompts failed)", run_id,
                         step, name, result.accuracy, "n/a" if result.stderr is None else f"{result.stderr:.3f}",
                         result.failed_prompts, result.prompts)
        if changed:
            order = {dataset.name: index for index, dataset in enumerate(record.spec.data.eval)}
            record.evals.sort(key=lambda e: (e.step, order.get(e.eval_set, len(order))))
            self.registry.save(record)

    def _keep_if_best(self, record: RunRecord, result: EvalResult, policy_path: str) -> None:
        """eval.best_by: a better result exports its policy to best/ (while its version is still protected from
        retention: its evaluation was in flight until now)."""
        spec = record.spec
        if spec.eval.best_by is None or result.eval_set != spec.best_by_set:
            return
        metric = spec.eval.best_by.metric
        value = getattr(result, metric)
        if value is None or (record.best is not None and value <= record.best.value):
            return
        target = self.registry.checkpoints(record).best_dir
        try:
            staged_copy(Path(policy_path), target, {"run_id": record.id, "step": result.step, metric: value},
                        link=True)
        except (OSError, CheckpointError) as err:
            log.warning("run %s: cannot export the best checkpoint (step %d): %s", record.id, result.step, err)
            return
        record.best = BestCheckpoint(step=result.step, eval_set=result.eval_set, metric=metric, value=float(value),
                                     path=str(target))
        log.info("run %s: best checkpoint is now step %d (%s %.4f on %s)", record.id, result.step, metric, value,
                 result.eval_set)

    # --- views -----------------------------------------------------------------------------------------

    def view(self, record: RunRecord) -> dict[str, Any]:
        """The record as GET /v1/runs/{id} shows it, with metrics, queue depths and each service's replicas."""
        body = record.model_dump(mode="json")
        body["latest_metrics"] = self.registry.latest_metrics(record.id)
        body["queues"] = self.registry.queue_depths()
        body.update(self.services_view())
        if record.state == "queued":
            queued = self.registry.queued_ids()
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


def _group_outcome(group: controller_pb2.GroupUse) -> str:
    if group.trained:
        return "groups_trained"
    return "groups_dropped" if group.skip_reason.startswith("dropped") else "groups_skipped"
