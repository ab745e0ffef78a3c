"""The trainer service: consumes scored groups of the active run and trains it with DPO (DESIGN §2–§5).

For trainer step t (1-based) it collects exactly `train.batch_prompts` scored groups of the active run whose
policy version is v(t) = spec.policy_version_for_step(t). A group belongs to step t by its prompt id
("t{step}-{slot}", as the controller names train prompts; other ids fall back to the first open step of their
version). Groups of another run, of the wrong version, for a step already trained, or whose prompt id was
already consumed (idempotency) are acked at once and counted as dropped — never trained.

Delivery: the groups a step used are acked only once a checkpoint covering that step is durably written and
committed. A restarted trainer (same consumer name) re-reads its own pending entries first; it resumes from its
newest valid trainer checkpoint, acks the replayed groups of steps that checkpoint already covers (their prompt
ids are in the checkpoint's consumed set) and retrains the steps after it on the same groups.

Per step: train → ReportStep (stop if the controller answers cancelled) → on checkpoint steps, policy +
trainer state → (last step: final/) → CommitCheckpoint → ack.

Prometheus metrics (`TrainerMetrics`, served by `python -m semirl.trainer --metrics-port`): steps, step, wait and
checkpoint-write times, the last step's DPO metrics, groups trained, skipped and dropped, and the trainer's status.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import redis
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from semirl.core import keys, telemetry
from semirl.core.grpc_server import ServiceServer, channel
from semirl.core.registration import Registration
from semirl.core.runstate import RunRecord, active_run, active_run_id, load_run
from semirl.core.streams import Delivery, StreamQueue
from semirl.proto import controller_pb2, controller_pb2_grpc, trainer_pb2, trainer_pb2_grpc, types_pb2
from semirl.spec import RunSpec
from semirl.trainer.checkpointing import TrainerCheckpoints
from semirl.trainer.pairs import CORRECT_THRESHOLD, build_pairs

log = logging.getLogger(__name__)

_TRAIN_PROMPT_ID = re.compile(r"^t(\d+)-(\d+)$")
RUN_CHECK_INTERVAL_S = 2.0
RPC_TIMEOUT_S = 30.0
RPC_RETRY_S = 120.0
VISIBILITY_TIMEOUT_S = 300.0


class Stopped(Exception):  # noqa: N818
    """The process is shutting down."""


class RunLeft(Exception):  # noqa: N818
    """The run is no longer the active running run (finished, cancelled, failed or replaced)."""


class RunUnrecoverable(Exception):  # noqa: N818
    """Retrying cannot help (the controller refused a commit, the run directory does not match): fail the run."""


MAX_ATTEMPTS = 3  # consecutive failed attempts at one run (no successful step between them) before it is failed


def step_of_prompt(prompt_id: str) -> tuple[int, int] | None:
    match = _TRAIN_PROMPT_ID.match(prompt_id)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _prompt_order(prompt_id: str) -> tuple[int, int, str]:
    parsed = step_of_prompt(prompt_id)
    return (*parsed, prompt_id) if parsed else (1 << 62, 0, prompt_id)


@dataclass
class TrainerStatus:
    """What TrainerService.Status reports; written by the training loop, read by gRPC threads."""

    trainer_id: str
    run_id: str = ""
    step: int = 0
    total_steps: int = 0
    policy_version: int = 0
    resumed_from_step: int = 0
    state: str = "idle"
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, **values: Any) -> None:
        with self.lock:
            for name, value in values.items():
                setattr(self, name, value)

    def to_proto(self) -> trainer_pb2.TrainerStatus:
        with self.lock:
            return trainer_pb2.TrainerStatus(
                trainer_id=self.trainer_id, run_id=self.run_id, step=self.step, total_steps=self.total_steps,
                policy_version=self.policy_version, resumed_from_step=self.resumed_from_step, state=self.state,
            )


TRAINER_STATES = ("idle", "loading", "waiting", "training", "checkpointing", "done", "error")

# Gauges of the last trained step: metric name -> (key in the step report's metrics, help).
STEP_GAUGES = {
    "semirl_trainer_loss": ("loss", "DPO loss of the last step"),
    "semirl_trainer_reward_accuracy": ("pref_accuracy", "Pairs whose chosen implicit reward beats the rejected one"),
    "semirl_trainer_reward_margin": ("margin", "Mean implicit reward margin (chosen - rejected) of the last step"),
    "semirl_trainer_grad_norm": ("grad_norm", "Global gradient norm of the last step"),
    "semirl_trainer_learning_rate": ("lr", "Learning rate of the last step"),
    "semirl_trainer_entropy": ("entropy", "Mean per-token entropy of the last step's responses"),
    "semirl_trainer_sample_accuracy": ("accuracy", "Share of the last step's samples scored correct"),
    "semirl_trainer_sample_reward_mean": ("reward_mean", "Mean reward of the last step's samples"),
    "semirl_trainer_staleness_steps": ("staleness", "Step minus the oldest policy version in the last step"),
}


class TrainerMetrics:
    """The trainer's Prometheus metrics, in their own registry (core/telemetry.py)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else telemetry.new_registry()
        r = self.registry
        buckets = telemetry.SECONDS_BUCKETS
        self.steps = PromCounter("semirl_trainer_steps", "Trainer steps trained", registry=r)
        self.step_seconds = Histogram("semirl_trainer_step_seconds", "Time of one optimizer step (forward, backward, "
                                      "update)", registry=r, buckets=buckets)
        self.wait_seconds = Histogram("semirl_trainer_wait_seconds", "Time a step waited for its scored groups",
                                      registry=r, buckets=buckets)
        self.checkpoint_seconds = Histogram("semirl_trainer_checkpoint_write_seconds", "Time to write a checkpoint "
                                            "(policy, trainer state, final/)", registry=r, buckets=buckets)
        self.checkpoints = PromCounter("semirl_trainer_checkpoints", "Checkpoints written and committed", registry=r)
        self.pairs = PromCounter("semirl_trainer_pairs", "Preference pairs trained on", registry=r)
        self.groups_trained = PromCounter("semirl_trainer_groups_trained", "Groups that gave pairs to a step",
                                          registry=r)
        self.groups_skipped = PromCounter("semirl_trainer_groups_skipped", "Groups of a step that gave no pair "
                                          "(e.g. all correct, all wrong)", ["reason"], registry=r)
        self.groups_dropped = PromCounter("semirl_trainer_groups_dropped", "Groups acked without training (stale, "
                                          "wrong_version, duplicate, other_run, eval, ...)", ["reason"], registry=r)
        self.run_errors = PromCounter("semirl_trainer_run_errors", "Failed attempts at training a run", registry=r)
        self.step_gauges = {name: PromGauge(name, help_text, registry=r)
                            for name, (_key, help_text) in STEP_GAUGES.items()}

    def trained(self, metrics: dict[str, float], pairs: int, groups: int, skipped: list[str]) -> None:
        self.steps.inc()
        self.step_seconds.observe(metrics["step_seconds"])
        self.wait_seconds.observe(metrics["wait_seconds"])
        self.pairs.inc(pairs)
        self.groups_trained.inc(groups - len(skipped))
        for reason in skipped:
            self.groups_skipped.labels(reason).inc()
        for name, (key, _help) in STEP_GAUGES.items():
            if key in metrics:
                self.step_gauges[name].set(metrics[key])


class StatusCollector(Collector):
    """The trainer's status (what TrainerService.Status answers), read at scrape time."""

    def __init__(self, status: TrainerStatus) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        with self.status.lock:
            values = (self.status.step, self.status.total_steps, self.status.policy_version, self.status.state)
        step, total, version, state = values
        for name, help_text, value in (
            ("semirl_trainer_last_step", "Last step trained of the current run", step),
            ("semirl_trainer_total_steps", "Steps of the current run", total),
            ("semirl_trainer_policy_version", "Last policy version this trainer committed", version),
        ):
            family = GaugeMetricFamily(name, help_text)
            family.add_metric([], float(value))
            yield family
        states = GaugeMetricFamily("semirl_trainer_state", "1 for the trainer's current state", labels=["state"])
        for known in TRAINER_STATES if state in TRAINER_STATES else (*TRAINER_STATES, state):
            states.add_metric([known], 1.0 if known == state else 0.0)
        yield states


class StatusServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, status: TrainerStatus) -> None:
        self.status = status

    def Status(self, request, context):  # noqa: ANN001, ANN201, N802
        return self.status.to_proto()


class ControllerClient:
    """CommitCheckpoint / ReportStep with retries while the controller is unreachable."""

    def __init__(self, target: str, stop: threading.Event) -> None:
        self.target = target
        self.stop = stop
        self.channel = channel(target)
        self.stub = controller_pb2_grpc.ControllerInternalServiceStub(self.channel)

    def _call(self, method: Callable, request: Any) -> Any:
        deadline = time.monotonic() + RPC_RETRY_S
        delay = 0.5
        while True:
            try:
                return method(request, timeout=RPC_TIMEOUT_S)
            except grpc.RpcError as err:
                code = err.code() if hasattr(err, "code") else None
                retryable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if not retryable or time.monotonic() > deadline or self.stop.is_set():
                    raise
                log.warning("controller %s unavailable (%s); retrying in %.1fs", self.target, code, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 10.0)

    def commit(self, run_id: str, version: int, path: Path, final: bool) -> None:
        request = controller_pb2.CommitCheckpointRequest(
            run_id=run_id, policy=types_pb2.PolicyRef(version=version, path=str(path)), final=final
        )
        response = self._call(self.stub.CommitCheckpoint, request)
        if not response.committed:
            raise RunUnrecoverable(f"controller refused to commit version {version} of {run_id}: {response.error}")

    def report(self, report: controller_pb2.StepReport) -> bool:
        """Send a step report; True when the controller says the run was cancelled."""
        return bool(self._call(self.stub.ReportStep, report).cancelled)

    def fail(self, run_id: str, error: str) -> bool:
        """FailRun; True when the controller failed the run (False: unknown or already finished)."""
        return bool(self._call(self.stub.FailRun, controller_pb2.FailRunRequest(run_id=run_id, error=error)).failed)

    def close(self) -> None:
        self.channel.close()


class RunTrainer:
    """Trains one run from its newest valid checkpoint (or the seed) to its last step."""

    def __init__(
        self,
        client: redis.Redis,
        record: RunRecord,
        store: Path,
        controller: ControllerClient,
        trainer_id: str,
        status: TrainerStatus,
        stop: threading.Event,
        on_step: Callable[[], None] | None = None,
        metrics: TrainerMetrics | None = None,
    ) -> None:
        self.client = client
        self.record = record
        self.run_id = record.id
        self.spec: RunSpec = record.spec
        self.controller = controller
        self.status = status
        self.stop = stop
        self.on_step = on_step
        self.metrics = metrics if metrics is not None else TrainerMetrics()
        self.checkpoints = TrainerCheckpoints(store, record.id, self.spec.checkpoint.subdir, self.spec.model.path)
        if str(self.checkpoints.paths.run_dir) != str(Path(record.run_dir).resolve()):
            raise RunUnrecoverable(f"the trainer's run directory {self.checkpoints.paths.run_dir} differs from "
                                   f"the controller's {record.run_dir}")
        # Entries stay pending while their step waits for a checkpoint, possibly for minutes; XAUTOCLAIM hands
        # them back to this same consumer after the visibility timeout, and `held` recognizes them.
        self.queue = StreamQueue(client, keys.SCORED, keys.TRAINER_GROUP, trainer_id, types_pb2.ScoredGroup,
                                 visibility_timeout_s=VISIBILITY_TIMEOUT_S)
        self.held: set[str] = set()                 # entry ids buffered or trained-but-unacked by this trainer
        self.consumed: set[str] = set()             # prompt ids used by a trained step (trained or skipped)
        self.counters: Counter[str] = Counter()
        self.buffers: dict[int, dict[str, Delivery[types_pb2.ScoredGroup]]] = {}
        self.unacked: list[str] = []                # entries of trained steps since the last checkpoint
        self.dropped: list[controller_pb2.GroupUse] = []  # dropped since the last report
        self.resumed_from_step = 0
        self._last_run_check = 0.0

    # --- the run --------------------------------------------------------------------------------------

    def run(self) -> None:
        from semirl.trainer.engine import DPOEngine

        steps = self.spec.train.steps
        latest = self.checkpoints.latest_step()
        self.status.update(run_id=self.run_id, total_steps=steps, step=latest or 0, state="loading",
                           resumed_from_step=latest or 0, policy_version=self.record.policy_version)
        if latest is not None and latest >= steps:
            self._finish_done_run(latest)
            return
        engine = DPOEngine(self.spec)
        try:
            if latest is not None:
                state = self.checkpoints.load_trainer(engine, latest)
                self.consumed = set(state.get("consumed_prompt_ids", []))
                self.counters.update(state.get("counters", {}))
                self.resumed_from_step = latest
                log.info("run %s resumed from step %d", self.run_id, latest)
                self._commit_if_missing(latest)
            for step in range(engine.step + 1, steps + 1):
                self.status.update(step=step - 1, state="waiting")
                wait_start = time.monotonic()
                deliveries = self._collect(step)
                wait_seconds = time.monotonic() - wait_start
                self.status.update(state="training")
                report = self._train(engine, step, deliveries, wait_seconds)
                if self.controller.report(report):
                    raise RunLeft(f"run {self.run_id} was cancelled")
                if self.spec.is_checkpoint_step(step):
                    self._checkpoint(engine, step)
                self.status.update(step=step)
                if self.on_step is not None:
                    self.on_step()
            self.status.update(state="done")
        finally:
            engine.close()
            del engine
            gc.collect()

    def _finish_done_run(self, latest: int) -> None:
        """Every step is checkpointed already (a restart after the end): make sure final/ exists and is committed."""
        policy_dir = self.checkpoints.paths.policy_dir(latest)
        if not self.checkpoints.paths.final_dir.is_dir():
            self.checkpoints.save_final(policy_dir)
        self._commit_if_missing(latest)
        self.status.update(step=latest, state="done")

    def _commit_if_missing(self, step: int) -> None:
        record = load_run(self.client, self.run_id)
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
        if now - self._last_run_check < RUN_CHECK_INTERVAL_S:
            return
        self._last_run_check = now
        if active_run_id(self.client) != self.run_id:
            raise RunLeft(f"run {self.run_id} is no longer active")
        record = load_run(self.client, self.run_id)
        if record is None or record.state != "running":
            raise RunLeft(f"run {self.run_id} is {record.state if record else 'gone'}")

    def _collect(self, step: int) -> list[Delivery[types_pb2.ScoredGroup]]:
        want = self.spec.train.batch_prompts
        while len(self.buffers.get(step, {})) < want:
            self._check_run()
            for delivery in self.queue.read(count=want, block_ms=1000):
                self._route(delivery, step)
        collected = self.buffers.pop(step)
        return sorted(collected.values(), key=lambda d: _prompt_order(d.message.group.task.prompt_id))

    def _drop(self, delivery: Delivery[types_pb2.ScoredGroup], reason: str, *, report: bool = True) -> None:
        self.queue.ack([delivery.entry_id])
        self.counters[f"dropped_{reason}"] += 1
        self.metrics.groups_dropped.labels(reason).inc()
        group = delivery.message.group
        if report:
            self.dropped.append(controller_pb2.GroupUse(
                prompt_id=group.task.prompt_id, policy_version=group.policy_version, trained=False,
                skip_reason=f"dropped_{reason}",
            ))
        log.debug("dropped %s (%s)", group.task.prompt_id, reason)

    def _target_step(self, prompt_id: str, version: int, current: int) -> int | None:
        parsed = step_of_prompt(prompt_id)
        if parsed is not None:
            return parsed[0]
        for step in range(current, self.spec.train.steps + 1):
            if self.spec.policy_version_for_step(step) > version:
                return None
            if (self.spec.policy_version_for_step(step) == version
                    and len(self.buffers.get(step, {})) < self.spec.train.batch_prompts):
                return step
        return None

    def _route(self, delivery: Delivery[types_pb2.ScoredGroup], current: int) -> None:
        if delivery.entry_id in self.held:  # our own pending entry handed back by XAUTOCLAIM: already routed
            return
        group = delivery.message.group
        task = group.task
        if task.run_id != self.run_id:
            self._drop(delivery, "other_run", report=False)
            return
        if task.purpose == types_pb2.TASK_PURPOSE_EVAL:
            self._drop(delivery, "eval", report=False)
            return
        prompt_id = task.prompt_id
        if prompt_id in self.consumed:  # already trained (e.g. replayed after a resume): ack, never retrain
            self._drop(delivery, "duplicate")
            return
        step = self._target_step(prompt_id, group.policy_version, current)
        if step is None or step < current:
            self._drop(delivery, "stale")
            return
        if step > self.spec.train.steps:
            self._drop(delivery, "out_of_range")
            return
        if group.policy_version != self.spec.policy_version_for_step(step):
            self._drop(delivery, "wrong_version")
            return
        bucket = self.buffers.setdefault(step, {})
        if prompt_id in bucket:
            self._drop(delivery, "duplicate")
            return
        if len(bucket) >= self.spec.train.batch_prompts:
            self._drop(delivery, "surplus")
            return
        bucket[prompt_id] = delivery
        self.held.add(delivery.entry_id)

    # --- training, reporting, checkpointing -----------------------------------------------------------

    def _train(
        self, engine: Any, step: int, deliveries: list[Delivery[types_pb2.ScoredGroup]], wait_seconds: float
    ) -> controller_pb2.StepReport:
        groups = [d.message for d in deliveries]
        batch = build_pairs(groups, self.spec.train.seed)
        start = time.monotonic()
        metrics = engine.train_step(batch.pairs)
        step_seconds = time.monotonic() - start
        for delivery in deliveries:
            self.consumed.add(delivery.message.group.task.prompt_id)
            self.unacked.append(delivery.entry_id)
        self.counters["pairs"] += len(batch.pairs)
        self.counters["skipped"] += batch.num_skipped
        for reason in batch.skipped.values():
            self.counters[f"skipped_{reason}"] += 1

        rewards = [float(r) for g in groups for r in g.rewards]
        lengths = [len(s.token_ids) for g in groups for s in g.group.samples]
        versions = [g.group.policy_version for g in groups]
        samples = sum(len(g.group.samples) for g in groups)
        pair_metrics = {k: metrics[k] for k in ("loss", "chosen_logp", "rejected_logp", "margin", "pref_accuracy",
                                                "reward_chosen", "reward_rejected", "entropy", "grad_norm", "lr")}
        report_metrics = {
            **pair_metrics,
            "reward_mean": sum(rewards) / len(rewards) if rewards else 0.0,
            "accuracy": sum(r > CORRECT_THRESHOLD for r in rewards) / len(rewards) if rewards else 0.0,
            "pairs": float(len(batch.pairs)),
            "skipped": float(batch.num_skipped),
            "dropped": float(len(self.dropped)),
            "response_tokens": sum(lengths) / len(lengths) if lengths else 0.0,
            "staleness": float(step - min(versions)) if versions else 0.0,
            "step_seconds": step_seconds,
            "wait_seconds": wait_seconds,
            "samples_per_s": samples / step_seconds if step_seconds > 0 else 0.0,
        }
        uses = [
            controller_pb2.GroupUse(
                prompt_id=g.group.task.prompt_id, policy_version=g.group.policy_version,
                trained=g.group.task.prompt_id not in batch.skipped,
                skip_reason=batch.skipped.get(g.group.task.prompt_id, ""),
            )
            for g in groups
        ]
        uses.extend(self.dropped)
        self.dropped = []
        self.metrics.trained(report_metrics, len(batch.pairs), len(groups), list(batch.skipped.values()))
        log.info("run %s step %d: loss %.4f pairs %d skipped %d margin %.4f (%.2fs, waited %.2fs)",
                 self.run_id, step, metrics["loss"], len(batch.pairs), batch.num_skipped, metrics["margin"],
                 step_seconds, wait_seconds)
        return controller_pb2.StepReport(
            run_id=self.run_id, step=step, metrics=report_metrics, groups=uses,
            resumed_from_step=self.resumed_from_step,
        )

    def _checkpoint(self, engine: Any, step: int) -> None:
        self.status.update(state="checkpointing")
        start = time.monotonic()
        policy_dir = self.checkpoints.save_policy(engine, step)
        self.checkpoints.save_trainer(engine, step, {
            "consumed_prompt_ids": sorted(self.consumed), "counters": dict(self.counters),
        })
        final = step == self.spec.train.steps
        if final:
            self.checkpoints.save_final(policy_dir)
        self.metrics.checkpoint_seconds.observe(time.monotonic() - start)
        self.controller.commit(self.run_id, step, policy_dir, final=final)
        acked = self.queue.ack(self.unacked)
        self.held.difference_update(self.unacked)
        self.unacked = []
        self.status.update(policy_version=step)
        self.metrics.checkpoints.inc()
        log.info("run %s: checkpoint of step %d committed (%.2fs), %d entries acked",
                 self.run_id, step, time.monotonic() - start, acked)


class TrainerService:
    """Long-lived trainer process: waits for an active run, trains it, waits for the next."""

    def __init__(
        self, redis_url: str, store: Path | str, controller: str, grpc_port: int, trainer_id: str,
        *, poll_s: float = 1.0, retry_s: float = 10.0, advertise_host: str = "127.0.0.1",
    ) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.store = Path(store)
        self.trainer_id = trainer_id
        self.stop = threading.Event()
        self.status = TrainerStatus(trainer_id=trainer_id)
        self.metrics = TrainerMetrics()
        self.metrics.registry.register(StatusCollector(self.status))
        self.controller = ControllerClient(controller, self.stop)
        self.server = ServiceServer(f"0.0.0.0:{grpc_port}", "semirl.v1.TrainerService")
        self.server.add(trainer_pb2_grpc.add_TrainerServiceServicer_to_server, StatusServicer(self.status))
        self.registration = Registration(self.client, "trainer", trainer_id, f"{advertise_host}:{self.server.port}")
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.finished: set[str] = set()
        self.attempts: Counter[str] = Counter()   # consecutive failed attempts per run (reset by a trained step)
        self.to_fail: dict[str, str] = {}         # runs to fail whose FailRun did not get through yet

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> None:
        self.server.start()
        self.registration.start()
        self.server.set_serving(True)

    def serve_forever(self) -> None:
        self.start()
        try:
            while not self.stop.is_set():
                self.poll_once()
        finally:
            self.shutdown()

    def poll_once(self) -> None:
        try:
            record = active_run(self.client)
        except redis.ConnectionError as err:
            log.warning("redis unavailable: %s", err)
            self.stop.wait(self.poll_s)
            return
        if record is None or record.state != "running" or record.id in self.finished:
            self.status.update(state="idle" if record is None or record.id not in self.finished else "done")
            self.stop.wait(self.poll_s)
            return
        if record.id in self.to_fail:
            self._fail(record.id, self.to_fail[record.id])
            return
        log.info("training run %s (%s, %d steps)", record.id, record.name, record.spec.train.steps)

        def trained_a_step() -> None:
            self.attempts.pop(record.id, None)

        try:
            RunTrainer(self.client, record, self.store, self.controller, self.trainer_id, self.status,
                       self.stop, on_step=trained_a_step, metrics=self.metrics).run()
            self.finished.add(record.id)
            self.attempts.pop(record.id, None)
            log.info("run %s: all %d steps trained", record.id, record.spec.train.steps)
        except Stopped:
            log.info("stopping during run %s", record.id)
        except RunLeft as why:
            log.info("%s; dropping its engine", why)
            self.finished.add(record.id)
            self.attempts.pop(record.id, None)
        except RunUnrecoverable as err:
            log.error("run %s cannot go on: %s", record.id, err)
            self._fail(record.id, str(err))
        except Exception as err:
            self.metrics.run_errors.inc()
            self.attempts[record.id] += 1
            attempts = self.attempts[record.id]
            if attempts >= MAX_ATTEMPTS:
                log.exception("run %s failed in the trainer (attempt %d of %d); failing it",
                              record.id, attempts, MAX_ATTEMPTS)
                self._fail(record.id, f"trainer failed {attempts} times in a row: {type(err).__name__}: {err}")
                return
            log.exception("run %s failed in the trainer (attempt %d of %d); retrying from its last checkpoint",
                          record.id, attempts, MAX_ATTEMPTS)
            self.status.update(state="error")
            self.stop.wait(self.retry_s)

    def _fail(self, run_id: str, error: str) -> None:
        """Ask the controller to fail the run, then stop training it; retried on the next poll if the call fails."""
        self.status.update(state="error")
        try:
            failed = self.controller.fail(run_id, error)
        except grpc.RpcError as err:
            log.warning("FailRun for %s did not get through (%s); retrying", run_id, err)
            self.to_fail[run_id] = error
            self.stop.wait(self.retry_s)
            return
        self.to_fail.pop(run_id, None)
        self.attempts.pop(run_id, None)
        self.finished.add(run_id)
        log.info("run %s %s; waiting for the next active run", run_id,
                 "failed" if failed else "was already finished")

    def shutdown(self) -> None:
        self.stop.set()
        self.server.set_serving(False)
        self.registration.stop()
        self.server.stop()
        self.controller.close()
