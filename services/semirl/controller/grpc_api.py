"""ControllerInternalService over gRPC: a thin adapter onto the Controller engine."""

from __future__ import annotations

from semirl.core.grpc_server import ServiceServer
from semirl.proto import controller_pb2, controller_pb2_grpc

from .scheduler import Controller

SERVICE_NAME = "semirl.v1.ControllerInternalService"


class ControllerServicer(controller_pb2_grpc.ControllerInternalServiceServicer):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def CommitCheckpoint(self, request, context):  # noqa: ANN001, ANN201, N802
        committed, error = self.controller.commit(
            request.run_id, int(request.policy.version), request.policy.path, bool(request.final)
        )
        return controller_pb2.CommitCheckpointResponse(committed=committed, error=error)

    def ReportStep(self, request, context):  # noqa: ANN001, ANN201, N802
        return controller_pb2.ReportStepResponse(cancelled=self.controller.report_step(request))

    def FailRun(self, request, context):  # noqa: ANN001, ANN201, N802
        return controller_pb2.FailRunResponse(failed=self.controller.fail(request.run_id, request.error))


def build_grpc_server(controller: Controller, address: str) -> ServiceServer:
    server = ServiceServer(address, SERVICE_NAME)
    server.add(controller_pb2_grpc.add_ControllerInternalServiceServicer_to_server, ControllerServicer(controller))
    return server
