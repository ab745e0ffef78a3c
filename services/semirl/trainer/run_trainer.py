"""The step loop of one run, on trainer rank 0: collect a step's groups, train (all ranks), report, checkpoint.

Per step: intake (trainer/intake.py) → every rank trains its shard (trainer/ranks.py) → ReportStep (stop if the
controller answers cancelled) → on sync steps (docs/architecture.md, weight transfer): with `sync.transport:
broadcast`, the controller's plan and the in-memory send to its members (trainer/weight_sender.py), committed in
memory; then the policy export (and final/ on the last step) and its CommitCheckpoint, which releases the version
to the generators that did not receive it → on durable steps (`checkpoint.every`) the trainer state (every rank
writes its shards) and the ack of every group trained since the last durable step (decision 32).

Resume: a restarted trainer (same consumer name) re-reads its own pending entries first; it resumes from its
newest valid trainer checkpoint, acks the replayed groups of steps that checkpoint already covers (their prompt
ids are in the checkpoint's consumed set) and retrains the steps after it on the same groups.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import redis

from semirl.core import keys
from semirl.core.rewards import is_correct, source_name
from semirl.core.runstate import RunRecord, active_run_id, load_run
from semirl.core.streams import Delivery, StreamQueue
from semirl.proto import controller_pb2, types_pb2
from semirl.spec import RunSpec
from semirl.trainer import backoff
from semirl.trainer.checkpoint_writer import TrainerCheckpoints
from semirl.trainer.controller_client import ControllerInternalClient, RunUnrecoverable
from semirl.trainer.engine import STATE_FILE
from semirl.trainer.intake import StepIntake
from semirl.trainer.metrics import TrainerMetrics, TrainerStatus
from semirl.trainer.objectives import StepExamples
from semirl.trainer.preference_source import PreferenceSource
from semirl.trainer.ranks import RankDriver
from semirl.trainer.weight_sender import WeightSender

log = logging.getLogger(__name__)

RUN_CHECK_INTERVAL_S = 2.0
VISIBILITY_TIMEOUT_S = 300.0
REDIS_OUTAGE = (redis.ConnectionError, redis.TimeoutError)
T = TypeVar("T")


class Stopped(Exception):  # noqa: N818
    """The process is shutting down."""


class RunLeft(Exception):  # noqa: N818
    """The run is no longer the active running run (finished, cancelled, failed or replaced)."""


class RunTrainer:
    """Trains one run from its newest valid checkpoint (or the seed) to its last step."""

    def __init__(
        self,
        client: redis.Redis,
        record: RunRecord,
        store: Path,
        controller: ControllerInternalClient,
        trainer_id: str,
        status: TrainerStatus,
        stop: threading.Event,
        driver: RankDriver,
        on_step: Callable[[], None] | None = None,
        metrics: TrainerMetrics | None = None,
        sender: WeightSender | None = None,
    ) -> None:
        self.client = client
        self.record = record
        self.run_id = record.id
        self.spec: RunSpec = record.spec
        self.controller = controller
        self.status = status
        self.stop = stop
        self.driver = driver
        self.on_step = on_step
        self.metrics = metrics if metrics is not None else TrainerMetrics()
        self.sender = sender
        self.checkpoints = TrainerCheckpoints(store, record.id, self.spec.checkpoint.subdir, self.spec.model.path)
        if str(self.checkpoints.paths.run_dir) != str(Path(record.run_dir).resolve()):
            raise RunUnrecoverable(f"the trainer's run directory {self.checkpoints.paths.run_dir} differs from "
                                   f"the controller's {record.run_dir}")
        # Entries stay pending while their step waits for a checkpoint, possibly for minutes; XAUTOCLAIM hands
        # them back to this same consumer after the visibility timeout, and the intake recognizes them.
        queue = StreamQueue(client, keys.SCORED, keys.TRAINER_GROUP, trainer_id, types_pb2.ScoredGroup,
                            visibility_timeout_s=VISIBILITY_TIMEOUT_S)
        self.intake = StepIntake(queue, record.id, self.spec,
                                 on_drop=lambda reason: self.metrics.dropped.labels(reason).inc())
        # Offline DPO on a static preference dataset: steps come from the dataset, not from the scored stream.
        self.preferences = PreferenceSource(self.spec, record.id) if self.spec.static_preferences else None
        self.unacked: list[str] = []                # entries of trained steps since the last checkpoint
        self._last_checkpoint: dict[str, float] = {}  # its parts' seconds, reported with the next step
        self.resumed_from_step = 0
        self._last_run_check = 0.0
        self._last_heartbeat = 0.0

    # --- the run --------------------------------------------------------------------------------------

    def run(self) -> None:
        foreign = self.checkpoints.foreign_owner()
        if foreign is not None:
            raise RunUnrecoverable(foreign)
        steps = self.spec.train.steps
        latest = self.checkpoints.latest_step()
        self.status.update(run_id=self.run_id, total_steps=steps, step=latest or 0, state="loading",
                           resumed_from_step=latest or 0, policy_version=self.record.policy_version)
        if latest is not None and latest >= steps:
            self._finish_done_run(latest)
            return
        resume_dir = self.checkpoints.verified_trainer_dir(latest) if latest is not None else None
        state = json.loads((resume_dir / STATE_FILE).read_text()) if resume_dir is not None else {}
        saved_world = int(state.get("world_size", self.driver.ranks.world_size))
        if saved_world != self.driver.ranks.world_size:
            # DeepSpeed's optimizer shards are per rank: they load only into a job of the same size.
            raise RunUnrecoverable(
                f"run {self.run_id} was checkpointed at step {latest} by {saved_world} trainer ranks; this job has "
                f"{self.driver.ranks.world_size}. Resume it with the same trainer.replicaCount x trainer.gpus.")
        try:
            engine = self.driver.start_run(self.run_id, self.spec, latest or 0, str(resume_dir or ""))
            if latest is not None:
                self.intake.consumed = set(state.get("consumed_prompt_ids", []))
                self.intake.counters.update(state.get("counters", {}))
                self.resumed_from_step = latest
                log.info("run %s resumed from step %d", self.run_id, latest)
                self._commit_if_missing(latest)
            for step in range(engine.step + 1, steps + 1):
                self.status.update(step=step - 1, state="waiting")
                wait_start = time.monotonic()
                deliveries = self._collect(step)
                wait_seconds = time.monotonic() - wait_start
                self.status.update(state="training")
                report = self._train(step, deliveries, wait_seconds)
                if self.controller.report(report):
                    raise RunLeft(f"run {self.run_id} was cancelled")
                if self.spec.is_checkpoint_step(step):
                    self._checkpoint(step)
                self.status.update(step=step)
                if self.on_step is not None:
                    self.on_step()
            self.status.update(state="done")
        finally:
            self.driver.end_run()

    # --- outages ---------------------------------------------------------------------------------------

    def _through_outages(self, action: Callable[[], T], what: str,
                         recover: Callable[[], None] | None = None) -> T:
        """`action()`, retried with backoff while Redis is unreachable (`recover()` before each retry): an outage
        never fails the run or rebuilds the engine (docs/architecture.md, decision 25). The other ranks keep
        getting heartbeats meanwhile."""
        started, waits = time.monotonic(), backoff.delays()
        while True:
            try:
                return action()
            except REDIS_OUTAGE as err:
                if self.stop.is_set():
                    raise Stopped() from err
                delay = next(waits)
                log.warning("redis unreachable while %s for %.0fs (%s); retrying in %.1fs", what,
                            time.monotonic() - started, err, delay)
                backoff.pause(self.stop, delay, self.driver.heartbeat)
                if recover is not None:
                    recover()

    def _finish_done_run(self, latest: int) -> None:
        """Every step is checkpointed already (a restart after the end): make sure final/ exists and is committed."""
        policy_dir = self.checkpoints.paths.policy_dir(latest)
        if not self.checkpoints.paths.final_dir.is_dir():
            self.checkpoints.save_final(policy_dir)
        self._commit_if_missing(latest)
        self.status.update(step=latest, state="done")

    def _commit_if_missing(self, step: int) -> None:
        record = self._through_outages(lambda: load_run(self.client, self.run_id), "reading the run")
        if record is not None and record.policy_version < step:
            log.info("re-committing version %d of %s (the trainer stopped before the commit)", step, self.run_id)
            self.controller.commit(self.run_id, step, self.checkpoints.paths.policy_dir(step),
                                   final=step == self.spec.train.steps)
            self.status.update(policy_version=step)

    # --- collecting groups ----------------------------------------------------------------------------

    def _check_run(self) -> None:
        if self.stop.is_set():
            raise Stopped()
        now = time.monotonic()
        if now - self._last_heartbeat >= backoff.HEARTBEAT_S:
            self._last_heartbeat = now
            self.driver.heartbeat()
        if now - self._last_run_check < RUN_CHECK_INTERVAL_S:
            return
        self._last_run_check = now
        if self._through_outages(lambda: active_run_id(self.client), "checking the run") != self.run_id:
            raise RunLeft(f"run {self.run_id} is no longer active")
        record = self._through_outages(lambda: load_run(self.client, self.run_id), "checking the run")
        if record is None or record.state != "running":
            raise RunLeft(f"run {self.run_id} is {record.state if record else 'gone'}")

    def _collect(self, step: int) -> list[Delivery[types_pb2.ScoredGroup]]:
        if self.preferences is not None:
            self._check_run()
            return [Delivery(entry_id="", message=group) for group in self.preferences.groups(step)]
        while not self.intake.complete(step):
            self._check_run()
            self._through_outages(lambda: self.intake.poll(step), f"collecting step {step}",
                                  recover=self.intake.queue.replay_pending)
        return self.intake.take(step)

    # --- training, reporting, checkpointing -----------------------------------------------------------

    def _train(
        self, step: int, deliveries: list[Delivery[types_pb2.ScoredGroup]], wait_seconds: float
    ) -> controller_pb2.StepReport:
        groups = [d.message for d in deliveries]
        start = time.monotonic()
        batch, metrics = self.driver.train_step(step, groups)
        step_seconds = time.monotonic() - start
        self.unacked.extend(self.intake.mark_trained(deliveries))
        counters = self.intake.counters
        counters["pairs"] += len(batch.examples)
        counters["skipped"] += len(batch.skipped)
        for reason in batch.skipped.values():
            counters[f"skipped_{reason}"] += 1
        dropped = self.intake.take_dropped()
        report_metrics = {**metrics, **self._sample_metrics(step, groups, batch, len(dropped)),
                          "step_seconds": step_seconds, "wait_seconds": wait_seconds, **self._last_checkpoint}
        self._last_checkpoint = {}
        samples = sum(len(g.group.samples) for g in groups)
        report_metrics["samples_per_s"] = samples / step_seconds if step_seconds > 0 else 0.0
        report_metrics.pop("pair_tokens", None)
        uses = [
            controller_pb2.GroupUse(
                prompt_id=g.group.task.prompt_id, policy_version=g.group.policy_version,
                trained=g.group.task.prompt_id not in batch.skipped,
                skip_reason=batch.skipped.get(g.group.task.prompt_id, ""),
            )
            for g in groups
        ]
        uses.extend(dropped)
        self.metrics.trained(report_metrics, len(batch.examples), len(groups), list(batch.skipped.values()))
        log.info("run %s step %d: loss %.4f examples %d skipped %d (%.2fs, waited %.2fs)",
                 self.run_id, step, metrics.get("loss", 0.0), len(batch.examples), len(batch.skipped),
                 step_seconds, wait_seconds)
        return controller_pb2.StepReport(
            run_id=self.run_id, step=step, metrics=report_metrics, groups=uses,
            resumed_from_step=self.resumed_from_step,
        )

    @staticmethod
    def _sample_metrics(step: int, groups: list[types_pb2.ScoredGroup], batch: StepExamples,
                        dropped: int) -> dict[str, float]:
        rewards = [float(r) for g in groups for r in g.rewards]
        lengths = [len(s.token_ids) for g in groups for s in g.group.samples]
        versions = [g.group.policy_version for g in groups]
        return {
            "reward_mean": sum(rewards) / len(rewards) if rewards else 0.0,
            "accuracy": sum(is_correct(r) for r in rewards) / len(rewards) if rewards else 0.0,
            "pairs": float(len(batch.examples)),
            "skipped": float(len(batch.skipped)),
            "dropped": float(dropped),
            "response_tokens": sum(lengths) / len(lengths) if lengths else 0.0,
            "staleness": float(step - min(versions)) if versions else 0.0,
            # optimizer updates between the policy that sampled a group and the one that trains on it (0: on-policy)
            "staleness_mean": sum(step - 1 - v for v in versions) / len(versions) if versions else 0.0,
            "staleness_max": float(step - 1 - min(versions)) if versions else 0.0,
            **_per_source_metrics(groups, batch),
        }

    def _checkpoint(self, step: int) -> None:
        """Broadcast (when planned) and commit in memory, export and commit it, trainer state and ack on durable
        steps (decision 32). The seconds of each part go into the next step's report: `sync_pause_s` (step done to
        the version released: the in-memory commit, else the export's), `sync_broadcast_s`, `checkpoint_policy_s`,
        `checkpoint_commit_s`, `checkpoint_state_s`."""
        self.status.update(state="checkpointing")
        start = time.monotonic()
        final = step == self.spec.train.steps
        sent = None if final else self._broadcast(step)
        if sent is not None and sent.delivered:
            self.controller.commit(self.run_id, step, None, final=False, in_memory=True, transfers=sent.outcomes)
            self.status.update(policy_version=step)
        released = time.monotonic()
        policy_dir = self.checkpoints.save_policy(self.driver, step)
        if final:
            self.checkpoints.save_final(policy_dir)
        written = time.monotonic()
        durable = self.spec.is_durable_step(step)
        extra_state = {"consumed_prompt_ids": sorted(self.intake.consumed), "counters": dict(self.intake.counters)}
        try:
            fallback = sent.outcomes if sent is not None and not sent.delivered else None
            self.controller.commit(self.run_id, step, policy_dir, final=final, transfers=fallback,
                                   nbytes=_directory_bytes(policy_dir))
        finally:  # a failed commit is retried from this trainer state, as before the split
            committed = time.monotonic()
            if durable:
                self.checkpoints.save_trainer_state(self.driver, step, extra_state)
        done = time.monotonic()
        in_memory = sent is not None and bool(sent.delivered)
        pause = (released if in_memory else committed) - start
        self._last_checkpoint = {"sync_pause_s": pause, "checkpoint_policy_s": written - released,
                                 "checkpoint_commit_s": committed - written, "checkpoint_state_s": done - committed}
        if sent is not None:
            self._last_checkpoint["sync_broadcast_s"] = sent.seconds
        self.metrics.commit_seconds.observe(committed - start)
        self.metrics.checkpoint_seconds.observe(done - start)
        self.metrics.sync_pause_seconds.observe(pause)
        self.status.update(policy_version=step)
        self.metrics.checkpoints.inc()
        acked = 0
        if durable:
            acked = self._through_outages(lambda: self.intake.queue.ack(self.unacked), f"acking step {step}")
            self.intake.released(self.unacked)
            self.unacked = []
        log.info("run %s: checkpoint of step %d committed (%.2fs%s%s), %d entries acked", self.run_id, step,
                 time.monotonic() - start, f", in memory after {pause:.2f}s" if in_memory else "",
                 ", durable" if durable else "", acked)

    def _broadcast(self, step: int):  # noqa: ANN202 - SyncResult | None
        """The in-memory send of version `step` when the spec and the controller's plan call for it."""
        if self.sender is None or self.spec.sync.offline or self.spec.sync.transport != "broadcast":
            return None
        record = self._through_outages(lambda: load_run(self.client, self.run_id), "reading the run")
        if record is not None and record.policy_version >= step:
            return None  # a replay after a restart: the version is committed already
        plan = self.controller.plan_sync(self.run_id, step)
        if plan.transport != "broadcast" or not plan.members:
            log.info("run %s: v%d goes through storage (%s)", self.run_id, step, plan.reason or "no members")
            return None
        return self.sender.send(self.run_id, step, plan)


def _directory_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def _per_source_metrics(groups: list[types_pb2.ScoredGroup], batch: StepExamples) -> dict[str, float]:
    """Per reward source present in the step (mixed tasks): groups, examples (pairs or samples), skipped groups
    and the mean reward, as `<name>_<source>`."""
    source_of = {g.group.task.prompt_id: source_name(g.group.task) for g in groups}
    metrics: dict[str, float] = {}
    for source in sorted(set(source_of.values())):
        mine = [g for g in groups if source_of[g.group.task.prompt_id] == source]
        rewards = [float(r) for g in mine for r in g.rewards]
        metrics[f"groups_{source}"] = float(len(mine))
        metrics[f"pairs_{source}"] = float(sum(source_of.get(e.prompt_id) == source for e in batch.examples))
        metrics[f"skipped_{source}"] = float(sum(source_of.get(p) == source for p in batch.skipped))
        metrics[f"reward_mean_{source}"] = sum(rewards) / len(rewards) if rewards else 0.0
    return metrics
