"""The trainer worker (rank 0 of the trainer job): waits for the active run, trains it, waits for the next.

A `Worker` (core/worker.py) whose step is one poll: the run's step loop is trainer/run_trainer.py (with its intake,
trainer/intake.py), the ranks are trainer/ranks.py; the controller client and the metrics are its own, the Status
servicer is added by trainer/__main__.py. A run the trainer cannot advance is failed through the
controller (FailRun) after MAX_ATTEMPTS consecutive attempts without a trained step, or at once when retrying cannot
help; the attempts are counted in Redis (trainer/attempts.py), so a job that restarts goes on counting. With several
ranks a failed command means the job lost a rank: the process exits so that the whole job restarts and resumes from
its last checkpoint (docs/architecture.md, "multi-rank trainer").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import grpc
import redis

from semirl.core.redis_client import connect
from semirl.core.runstate import RunRecord, active_run
from semirl.core.worker import Worker
from semirl.trainer.attempts import RunAttempts
from semirl.trainer.controller_client import ControllerInternalClient, RunUnrecoverable
from semirl.trainer.distributed import RankGroup, join_trainer_group
from semirl.trainer.metrics import StatusCollector, TrainerMetrics, TrainerStatus
from semirl.trainer.ranks import RankDriver, RanksLost
from semirl.trainer.run_trainer import RunLeft, RunTrainer, Stopped
from semirl.trainer.weight_sender import DEFAULT_TRANSFER_PORT, WeightSender

log = logging.getLogger(__name__)


class TrainerWorker(Worker[RunRecord]):
    """Long-lived trainer process: waits for an active run, trains it, waits for the next."""

    service = "trainer"
    grpc_service = "semirl.v1.TrainerService"
    unit = "step"
    metrics: TrainerMetrics

    def __init__(
        self, redis_url: str, store: Path | str, controller: str, grpc_port: int, trainer_id: str,
        *, poll_s: float = 1.0, retry_s: float = 10.0, advertise_host: str = "127.0.0.1",
        ranks: RankGroup | None = None, transfer_port: int = DEFAULT_TRANSFER_PORT,
    ) -> None:
        self.status = TrainerStatus(trainer_id=trainer_id)
        metrics = TrainerMetrics()
        metrics.registry.register(StatusCollector(self.status))
        super().__init__(connect(redis_url), trainer_id, metrics, grpc_port=grpc_port, advertise_host=advertise_host)
        self.driver = RankDriver(ranks or join_trainer_group())
        self.store = Path(store)
        self.trainer_id = trainer_id
        self.controller = ControllerInternalClient(controller, self.stop, while_waiting=self.driver.heartbeat)
        self.sender = WeightSender(self.driver, advertise_host=advertise_host, port=transfer_port)
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.finished: set[str] = set()
        self.attempts = RunAttempts(self.client)   # consecutive attempts per run, in Redis (reset by a trained step)
        self.to_fail: dict[str, str] = {}         # runs to fail whose FailRun did not get through yet

    def step(self) -> int:
        self.poll_once()
        return 0

    def poll_once(self) -> None:
        try:
            record = active_run(self.client)
        except (redis.ConnectionError, redis.TimeoutError) as err:
            log.warning("redis unavailable: %s", err)
            self.driver.heartbeat()
            self.stop.wait(self.poll_s)
            return
        if record is None or record.state != "running" or record.id in self.finished:
            self.status.update(state="idle" if record is None or record.id not in self.finished else "done")
            self.driver.heartbeat()
            self.stop.wait(self.poll_s)
            return
        if record.id in self.to_fail:
            self._fail(record.id, self.to_fail[record.id])
            return
        try:
            attempt = self.attempts.begin(record.id)
            reason = self.attempts.exhausted_reason(record.id, attempt) if self.attempts.exhausted(attempt) else ""
        except (redis.ConnectionError, redis.TimeoutError) as err:
            log.warning("redis unavailable: %s", err)
            self.stop.wait(self.poll_s)
            return
        if reason:
            log.error("run %s: %s; failing it", record.id, reason)
            self._fail(record.id, reason)
            return
        log.info("training run %s (%s, %d steps; attempt %d of %d)", record.id, record.name,
                 record.spec.train.steps, attempt, self.attempts.limit)
        streak_open = [True]

        def trained_a_step() -> None:
            if not streak_open[0]:
                return
            try:  # a passing Redis outage must not fail the step: the streak ends at a later step instead
                self.attempts.trained(record.id)
            except (redis.ConnectionError, redis.TimeoutError) as err:
                log.warning("could not end run %s's attempt streak in redis: %s", record.id, err)
                return
            streak_open[0] = False

        try:
            RunTrainer(self.client, record, self.store, self.controller, self.trainer_id, self.status,
                       self.stop, self.driver, on_step=trained_a_step, metrics=self.metrics, sender=self.sender).run()
            self.finished.add(record.id)
            self._quietly(self.attempts.trained, record.id)
            log.info("run %s: all %d steps trained", record.id, record.spec.train.steps)
        except Stopped:
            log.info("stopping during run %s", record.id)
            if streak_open[0]:
                self._quietly(self.attempts.withdrawn, record.id)
        except RanksLost as err:
            # The other ranks sit in some collective we cannot match: leave at once (no shutdown broadcast) so
            # the launcher stops this node's ranks and every other rank's next collective fails fast. The attempt
            # stays counted, with its reason, for the restarted job.
            self._note_failure(record.id, err, after_a_step=not streak_open[0])
            log.critical("run %s: the trainer job lost a rank; exiting so that the whole job restarts", record.id,
                         exc_info=True)
            logging.shutdown()
            os._exit(1)
        except RunLeft as why:
            log.info("%s; dropping its engine", why)
            self.finished.add(record.id)
            self._quietly(self.attempts.trained, record.id)
        except RunUnrecoverable as err:
            log.error("run %s cannot go on: %s", record.id, err)
            self._fail(record.id, str(err))
        except Exception as err:
            if self.stop.is_set():  # e.g. a controller call given up because we are stopping: not the run's fault
                log.info("stopping during run %s (%s: %s)", record.id, type(err).__name__, err)
                if streak_open[0]:
                    self._quietly(self.attempts.withdrawn, record.id)
                return
            self.metrics.run_errors.inc()
            attempt = self._note_failure(record.id, err, after_a_step=not streak_open[0]) or attempt
            if attempt >= self.attempts.limit:
                log.exception("run %s failed in the trainer (attempt %d of %d); failing it",
                              record.id, attempt, self.attempts.limit)
                self._fail(record.id, f"trainer failed {attempt} times in a row: {type(err).__name__}: {err}")
                return
            log.exception("run %s failed in the trainer (attempt %d of %d); retrying from its last checkpoint",
                          record.id, attempt, self.attempts.limit)
            self.status.update(state="error")
            self.stop.wait(self.retry_s)

    @staticmethod
    def _quietly(update: Callable[[str], None], run_id: str) -> None:
        """An attempt-counter update that a Redis outage may skip: the counter expires on its own, and a run that is
        done with is never started again by this process."""
        try:
            update(run_id)
        except (redis.ConnectionError, redis.TimeoutError) as err:
            log.warning("could not update run %s's attempts in redis: %s", run_id, err)

    def _note_failure(self, run_id: str, err: BaseException, *, after_a_step: bool) -> int:
        """Record the failure with its reason; returns the streak's length (0 if Redis could not be reached)."""
        try:
            return self.attempts.failed(run_id, f"{type(err).__name__}: {err}", after_a_step=after_a_step)
        except (redis.ConnectionError, redis.TimeoutError) as redis_err:
            log.warning("could not record the failure of run %s in redis: %s", run_id, redis_err)
            return 0

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
        self._quietly(self.attempts.trained, run_id)
        self.finished.add(run_id)
        log.info("run %s %s; waiting for the next active run", run_id,
                 "failed" if failed else "was already finished")

    def shutdown(self) -> None:
        self.stop.set()
        try:  # first: the other ranks leave their wait for the next command before this process stops serving
            self.driver.shutdown()
        except RanksLost:
            log.warning("the other trainer ranks are gone already")
        super().shutdown()

    def close(self) -> None:
        self.controller.close()
