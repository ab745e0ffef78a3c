"""The trainer's gRPC servicer: Status (and grpc.health.v1 from core/grpc_server.py)."""

from __future__ import annotations

from semirl.proto import trainer_pb2_grpc
from semirl.trainer.metrics import TrainerStatus


class StatusServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, status: TrainerStatus) -> None:
        self.status = status

    def Status(self, request, context):  # noqa: ANN001, ANN201, N802
        return self.status.to_proto()
