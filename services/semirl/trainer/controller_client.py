"""The trainer's client of the controller's internal gRPC service: commit a checkpoint, report a step, fail a run.

A controller that does not answer (UNAVAILABLE, DEADLINE_EXCEEDED: a restart, a reschedule, a node drain) is
waited for with backoff for as long as it takes — an outage is never a reason to fail a run or to rebuild the
engine (docs/architecture.md, decision 25). Every other error is the caller's to handle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from semirl.core.grpc_server import channel
from semirl.proto import controller_pb2, controller_pb2_grpc, types_pb2
from semirl.trainer import backoff

log = logging.getLogger(__name__)

RPC_TIMEOUT_S = 30.0
COMMIT_S_PER_GB = 1.0
TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class RunUnrecoverable(Exception):  # noqa: N818
    """Retrying cannot help (the controller refused a commit, the run directory does not match): fail the run."""


class ControllerInternalClient:
    """CommitCheckpoint / ReportStep with retries while the controller is unreachable."""

    def __init__(
        self, target: str, stop: threading.Event, *, while_waiting: Callable[[], None] | None = None,
    ) -> None:
        self.target = target
        self.stop = stop
        self.while_waiting = while_waiting      # e.g. keep the other trainer ranks' heartbeat going
        self.channel = channel(target)
        self.stub = controller_pb2_grpc.ControllerInternalServiceStub(self.channel)

    def _call(self, method: Callable, request: Any, timeout_s: float = RPC_TIMEOUT_S) -> Any:
        started, waits = time.monotonic(), backoff.delays()
        while True:
            try:
                return method(request, timeout=timeout_s)
            except grpc.RpcError as err:
                code = err.code() if hasattr(err, "code") else None
                if code not in TRANSIENT or self.stop.is_set():
                    raise
                delay = next(waits)
                log.warning("controller %s unavailable for %.0fs (%s); retrying in %.1fs", self.target,
                            time.monotonic() - started, code, delay)
                backoff.pause(self.stop, delay, self.while_waiting)

    def plan_sync(self, run_id: str, version: int) -> controller_pb2.WeightSyncPlan:
        """Who receives `version` in memory; a controller without PlanWeightSync (an older release) plans storage."""
        try:
            return self._call(self.stub.PlanWeightSync,
                              controller_pb2.PlanWeightSyncRequest(run_id=run_id, version=version))
        except grpc.RpcError as err:
            if hasattr(err, "code") and err.code() is grpc.StatusCode.UNIMPLEMENTED:
                return controller_pb2.WeightSyncPlan(transport="storage", reason="the controller plans no broadcast")
            raise

    def commit(self, run_id: str, version: int, path: Path | None, final: bool, *, in_memory: bool = False,
               transfers: list[controller_pb2.TransferOutcome] | None = None, nbytes: int = 0) -> None:
        """CommitCheckpoint. The controller checks an export's files by size only (the writer hashed them), so the
        deadline grows with the bytes only by what listing and stat-ing them take: COMMIT_S_PER_GB."""
        request = controller_pb2.CommitCheckpointRequest(
            run_id=run_id, policy=types_pb2.PolicyRef(version=version, path=str(path) if path else ""),
            final=final, in_memory=in_memory, transfers=transfers or [],
        )
        response = self._call(self.stub.CommitCheckpoint, request, RPC_TIMEOUT_S + COMMIT_S_PER_GB * nbytes / 1e9)
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
