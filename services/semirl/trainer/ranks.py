"""Every rank of a trainer job runs the same commands in the same order (docs/architecture.md, "multi-rank trainer").

Rank 0 is the driver: it alone reads Redis and talks to the controller. Each thing that touches the model — build
the engine for a run, train a step, save the state, drop the engine — is a `RankCommand` (proto/semirl/v1/
trainer.proto): rank 0 broadcasts it over the gloo control group and then executes it itself; the other ranks
(`follow`) receive and execute it. All ranks so enter DeepSpeed's collectives together. In a world of one the
broadcast is skipped and this is a plain method call.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from semirl.proto import trainer_pb2
from semirl.spec import RunSpec
from semirl.trainer.distributed import RankGroup
from semirl.trainer.engine import TrainingEngine, load_trainer_state
from semirl.trainer.objectives import StepExamples, objective_for

log = logging.getLogger(__name__)


class RankWorker:
    """What one rank does for each command; holds the engine of the current run."""

    def __init__(self, ranks: RankGroup) -> None:
        self.ranks = ranks
        self.engine: TrainingEngine | None = None
        self.spec: RunSpec | None = None

    def handle(self, command: trainer_pb2.RankCommand, local: Any = None) -> Any:
        """Execute `command`; `local` is rank 0's own part where it has one (send_policy: the bucket sender)."""
        kind = command.WhichOneof("command")
        if kind == "start_run":
            return self._start_run(command.start_run)
        if kind == "train_step":
            return self._train_step(command.train_step)
        if kind == "gather_policy":
            return self._engine().policy_state_dict()
        if kind == "send_policy":
            engine = self._engine()
            plan = engine.policy_plan(command.send_policy.bucket_bytes)
            engine.send_policy(plan, local if local is not None else _no_send)
            return None
        if kind == "save_state":
            self._engine().save_state(Path(command.save_state.directory))
            return None
        if kind in ("end_run", "shutdown"):
            self._end_run()
        return None

    def _start_run(self, start: trainer_pb2.RankStartRun) -> TrainingEngine:
        self._end_run()
        self.spec = RunSpec.model_validate_json(start.spec_json)
        self.engine = TrainingEngine(self.spec, ranks=self.ranks, objective=objective_for(self.spec))
        if start.resume_step:
            load_trainer_state(self.engine, Path(start.resume_dir))
        return self.engine

    def _train_step(self, command: trainer_pb2.RankTrainStep) -> tuple[StepExamples, dict[str, float]]:
        engine = self._engine()
        batch = engine.objective.examples(list(command.groups))
        if engine.step + 1 != command.step:
            raise RuntimeError(f"rank {self.ranks.rank} is at step {engine.step}, asked to train step {command.step}")
        return batch, engine.train_step(batch)

    def _engine(self) -> TrainingEngine:
        if self.engine is None:
            raise RuntimeError("no run started on this rank")
        return self.engine

    def _end_run(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
            self.spec = None


def _no_send(bucket: Any, tensors: Any) -> None:
    """A rank other than 0 only takes part in the gathers."""


class RanksLost(Exception):  # noqa: N818
    """A command failed in a job of several ranks: the job must restart (every rank) and resume."""


class RankDriver:
    """Rank 0's side: broadcast a command, then execute it locally."""

    def __init__(self, ranks: RankGroup, worker: RankWorker | None = None) -> None:
        self.ranks = ranks
        self.worker = worker or RankWorker(ranks)

    def run(self, command: trainer_pb2.RankCommand, local: Any = None) -> Any:
        if self.ranks.world_size == 1:
            return self.worker.handle(command, local)
        try:
            self.ranks.broadcast_bytes(command.SerializeToString())
            return self.worker.handle(command, local)
        except Exception as err:
            # The other ranks exit on any error, so the job cannot go on with this process group.
            raise RanksLost(f"{command.WhichOneof('command')} failed on a {self.ranks.world_size}-rank job: "
                            f"{type(err).__name__}: {err}") from err

    def heartbeat(self) -> None:
        """Keep the other ranks' wait in the control broadcast short while rank 0 waits for groups."""
        if self.ranks.world_size > 1:
            self.run(trainer_pb2.RankCommand(idle=trainer_pb2.RankIdle()))

    def start_run(self, run_id: str, spec: RunSpec, resume_step: int, resume_dir: str) -> TrainingEngine:
        return self.run(trainer_pb2.RankCommand(start_run=trainer_pb2.RankStartRun(
            run_id=run_id, spec_json=spec.model_dump_json(), resume_step=resume_step, resume_dir=resume_dir)))

    def train_step(self, step: int, groups: list[Any]) -> tuple[StepExamples, dict[str, float]]:
        return self.run(trainer_pb2.RankCommand(train_step=trainer_pb2.RankTrainStep(step=step, groups=groups)))

    def gather_policy(self, step: int) -> dict[str, Any] | None:
        """The policy's full weights on rank 0 (None on the other ranks)."""
        return self.run(trainer_pb2.RankCommand(gather_policy=trainer_pb2.RankGatherPolicy(step=step)))

    def send_policy(self, step: int, bucket_bytes: int, send: Any) -> None:
        """Every rank gathers the policy bucket by bucket; rank 0 calls `send(bucket, tensors)` with each. `send`
        must not raise: the other ranks are in the same gathers."""
        self.run(trainer_pb2.RankCommand(send_policy=trainer_pb2.RankSendPolicy(step=step, bucket_bytes=bucket_bytes)),
                 local=send)

    def save_state(self, step: int, directory: Path) -> None:
        """Every rank writes its DeepSpeed state into `directory`."""
        self.run(trainer_pb2.RankCommand(save_state=trainer_pb2.RankSaveState(step=step, directory=str(directory))))

    def end_run(self) -> None:
        self.run(trainer_pb2.RankCommand(end_run=trainer_pb2.RankEndRun()))

    def shutdown(self) -> None:
        self.run(trainer_pb2.RankCommand(shutdown=trainer_pb2.RankShutdown()))


def follow(ranks: RankGroup) -> None:
    """A rank other than 0: execute rank 0's commands until it says shut down."""
    worker = RankWorker(ranks)
    log.info("trainer rank %d of %d following rank 0", ranks.rank, ranks.world_size)
    while True:
        command = trainer_pb2.RankCommand.FromString(ranks.broadcast_bytes(None))
        kind = command.WhichOneof("command")
        if kind != "idle":
            log.debug("rank %d: %s", ranks.rank, kind)
        worker.handle(command)
        if kind == "shutdown":
            return
