"""ControllerInternalService over gRPC: a thin adapter onto the Controller engine.

A Redis outage while a call is served is UNAVAILABLE, which the trainer retries with backoff (every operation is
safe to repeat), not an application error that would fail the trainer's attempt at the run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import grpc
import redis

from semirl.core.grpc_server import ServiceServer
from semirl.proto import controller_pb2, controller_pb2_grpc

from .controller import Controller
from .views import TransferView

SERVICE_NAME = "semirl.v1.ControllerInternalService"


def _redis_outage_is_unavailable(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except redis.RedisError as err:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"the controller cannot reach Redis: {err}")

    return call


class ControllerServicer(controller_pb2_grpc.ControllerInternalServiceServicer):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    @_redis_outage_is_unavailable
    def PlanWeightSync(self, request, context):  # noqa: ANN001, ANN201, N802
        return self.controller.plan_weight_sync(request.run_id, int(request.version))

    @_redis_outage_is_unavailable
    def CommitCheckpoint(self, request, context):  # noqa: ANN001, ANN201, N802
        transfers = [TransferView(generator=t.generator_id, ok=t.ok, bytes=t.bytes, seconds=t.seconds, error=t.error)
                     for t in request.transfers]
        committed, error = self.controller.commit(
            request.run_id, int(request.policy.version), request.policy.path, bool(request.final),
            in_memory=bool(request.in_memory), transfers=transfers,
        )
        return controller_pb2.CommitCheckpointResponse(committed=committed, error=error)

    @_redis_outage_is_unavailable
    def ReportStep(self, request, context):  # noqa: ANN001, ANN201, N802
        return controller_pb2.ReportStepResponse(cancelled=self.controller.report_step(request))

    @_redis_outage_is_unavailable
    def FailRun(self, request, context):  # noqa: ANN001, ANN201, N802
        return controller_pb2.FailRunResponse(failed=self.controller.fail(request.run_id, request.error))


def build_grpc_server(controller: Controller, address: str) -> ServiceServer:
    server = ServiceServer(address, SERVICE_NAME)
    server.add(controller_pb2_grpc.add_ControllerInternalServiceServicer_to_server, ControllerServicer(controller))
    return server
