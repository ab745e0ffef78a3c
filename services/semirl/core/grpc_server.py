"""gRPC server and channel helpers shared by every service: health service on every server.

Health names (grpc.health.v1), as Kubernetes' gRPC probes ask them:
- `liveness`: SERVING from `start()` until shutdown — the process is up and its server answers.
- `readiness`, `""` and the service's own name: SERVING only while the service takes work (`set_serving`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


LIVENESS = "liveness"
READINESS = "readiness"


class ServiceServer:
    """A grpc.Server with the standard health service; `set_serving` flips readiness."""

    def __init__(self, address: str, service_name: str, *, max_workers: int = 8) -> None:
        self.service_name = service_name
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=_OPTIONS)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"cannot bind gRPC server to {address}")
        self._set(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.NOT_SERVING)

    def add(self, register: Callable[[object, grpc.Server], None], servicer: object) -> None:
        register(servicer, self.server)

    def start(self) -> None:
        self.server.start()
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)

    def set_serving(self, serving: bool = True) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self._set(status)

    def _set(self, status: int) -> None:
        for name in ("", READINESS, self.service_name):
            self.health.set(name, status)

    def stop(self, grace: float = 2.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


# A channel whose peer was gone retries the connection with gRPC's exponential backoff, up to 120 s apart by
# default: a controller back after a long outage would go unseen for up to two minutes while every call still
# fails at once (tests/faults). Peers here are in-cluster services, so reconnecting every few seconds is cheap.
_CHANNEL_OPTIONS = [
    *_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


def channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)


def check_health(target: str, timeout: float = 2.0, service: str = "") -> bool:
    try:
        with channel(target) as chan:
            response = health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        return response.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
