"""The trainer service's surroundings for integration tests: a stand-in controller (a real gRPC server implementing
the controller's internal service) and the trainer service itself in a thread of the test process, against real
Redis. A sibling module: pytest puts this folder on sys.path."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import redis

from semirl.core import keys
from semirl.core.checkpoint_store import verify
from semirl.core.grpc_server import ServiceServer
from semirl.core.runstate import RunRecord, load_run, save_run
from semirl.proto import controller_pb2, controller_pb2_grpc
from semirl.spec import RunSpec
from semirl.trainer.__main__ import build_trainer
from semirl.trainer.loop import TrainerWorker


class StandInController(controller_pb2_grpc.ControllerInternalServiceServicer):
    """The controller's side of the trainer contract: verify + commit (updating the run record), collect reports,
    fail runs as the controller does."""

    def __init__(self, client: redis.Redis, break_first_commit: bool = False, refuse_commits: bool = False) -> None:
        self.client = client
        self.broken = break_first_commit  # a transient error: the trainer retries from its last checkpoint
        self.refuse = refuse_commits      # committed=false: the trainer fails the run
        self.fails: list[controller_pb2.FailRunRequest] = []
        self.commits: list[controller_pb2.CommitCheckpointRequest] = []
        self.reports: list[controller_pb2.StepReport] = []
        self.on_commit: list[Callable[[controller_pb2.CommitCheckpointRequest], None]] = []
        self.cancel = False
        self.lock = threading.Lock()

    def CommitCheckpoint(self, request, context):  # noqa: ANN001, ANN201, N802
        with self.lock:
            if self.broken:
                self.broken = False
                context.abort(grpc.StatusCode.INTERNAL, "simulated failure")
            if self.refuse:
                return controller_pb2.CommitCheckpointResponse(committed=False, error="simulated refusal")
            verify(Path(request.policy.path))
            record = load_run(self.client, request.run_id)
            record = record.model_copy(update={"policy_version": request.policy.version})
            save_run(self.client, record)
            self.commits.append(request)
            for hook in self.on_commit:
                hook(request)
            return controller_pb2.CommitCheckpointResponse(committed=True)

    def ReportStep(self, request, context):  # noqa: ANN001, ANN201, N802
        with self.lock:
            self.reports.append(request)
            return controller_pb2.ReportStepResponse(cancelled=self.cancel)

    def FailRun(self, request, context):  # noqa: ANN001, ANN201, N802
        with self.lock:
            self.fails.append(request)
            record = load_run(self.client, request.run_id)
            if record is None or record.state != "running":
                return controller_pb2.FailRunResponse(failed=False)
            save_run(self.client, record.model_copy(update={"state": "failed", "error": request.error}))
            self.client.delete(keys.ACTIVE_RUN)
            return controller_pb2.FailRunResponse(failed=True)


def controller_server(controller: StandInController, port: int = 0) -> ServiceServer:
    """Serve `controller` on loopback (a free port unless `port` is given) and start it."""
    server = ServiceServer(f"127.0.0.1:{port}", "controller")
    server.add(controller_pb2_grpc.add_ControllerInternalServiceServicer_to_server, controller)
    server.start()
    return server


def redis_url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


def activate(client: redis.Redis, run_id: str, spec: RunSpec, run_dir: Path, model: str | Path) -> None:
    """Store a running run record and make it the active run, as the controller does when it starts a run."""
    save_run(client, RunRecord(id=run_id, name=spec.name, state="running", spec=spec, run_dir=str(run_dir),
                               policy_path=str(model)))
    client.set(keys.ACTIVE_RUN, run_id)


@contextmanager
def running_trainer(url: str, store: Path, controller_port: int, trainer_id: str) -> Iterator[TrainerWorker]:
    """The trainer service serving in a thread; stopped (after its current step) and joined on exit."""
    service = build_trainer(url, str(store), f"127.0.0.1:{controller_port}", 0, trainer_id, poll_s=0.1, retry_s=0.1)
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.stop.set()
        thread.join(60)


def wait_for(predicate: Callable[[], bool], timeout: float = 120.0, what: str = "timed out") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
