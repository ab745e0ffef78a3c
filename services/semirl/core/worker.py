"""The worker kit: what every worker service (generator, verifier, reward, trainer) is made of.

A worker is a `Worker` subclass (its `loop.py`) that defines `step()`, one round of its work. The kit gives it:
- its Redis client, a stop event, its gRPC `ServiceServer` (health included) and its `Registration`;
- `start` (server, registration, the subclass's `on_start`, then readiness), `serve_forever` (steps until stopped,
  a Redis error in a step counted and retried a second later) and `shutdown` (readiness off, registration removed,
  server stopped, the subclass's `close`, the client closed);
- `accept()`: the one filter for messages a worker must not work on, acked and counted in its metrics'
  `dropped{reason}`: malformed (no run or prompt id), stale (their run has ended), duplicate (this stage has done
  that prompt already; its done set, docs/architecture.md, data flow);
- the command-line options every worker takes, its logging, and SIGTERM/SIGINT: finish the current step, then exit.

A worker's servicer is built in its `__main__` and added to `worker.server` before `serve_forever`, so a servicer
never imports its worker. Every worker package has the same five files: engine.py (the work itself: no Redis, no
gRPC), loop.py (the Worker), grpc_api.py (the servicer), metrics.py and __main__.py (flags, wiring, serving).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import redis
from prometheus_client import CollectorRegistry, Counter

from semirl.core import keys, telemetry
from semirl.core.grpc_server import ServiceServer
from semirl.core.registration import Registration
from semirl.core.runstate import StaleRunFilter
from semirl.core.streams import Delivery
from semirl.proto import types_pb2

log = logging.getLogger(__name__)

M = TypeVar("M")
DROP_REASONS = ("stale", "malformed", "duplicate")
REDIS_RETRY_S = 1.0


class WorkerMetrics:
    """The metrics every worker has, in the worker's own registry (core/telemetry.py): `dropped{reason}`, named
    `semirl_<service>_<unit>_dropped` (tasks for the generator, groups for the others), and Redis errors."""

    def __init__(self, service: str, unit: str, dropped_help: str, registry: CollectorRegistry | None = None,
                 *, reasons: Sequence[str] = DROP_REASONS) -> None:
        self.registry = registry if registry is not None else telemetry.new_registry()
        self.dropped = Counter(f"semirl_{service}_{unit}_dropped", dropped_help, ["reason"], registry=self.registry)
        self.redis_errors = Counter(f"semirl_{service}_redis_errors", "Redis errors in the work loop",
                                    registry=self.registry)
        for reason in reasons:
            self.dropped.labels(reason)


class Worker(ABC, Generic[M]):
    """One worker process: Redis, gRPC, registration and the serve loop around the subclass's `step()`."""

    service: ClassVar[str]       # its name in the registration keys and the chart ("generator")
    grpc_service: ClassVar[str]  # the gRPC service its health names carry ("semirl.v1.GeneratorService")
    unit: ClassVar[str] = "batch"  # what it finishes on SIGTERM before exiting
    done_stage: str | None = None  # its done set (keys.DONE_STAGES), for accept()'s duplicate check

    def __init__(self, client: redis.Redis, worker_id: str, metrics: WorkerMetrics, *, grpc_port: int,
                 advertise_host: str = "127.0.0.1") -> None:
        self.client = client
        self.worker_id = worker_id
        self.metrics = metrics
        self.stop = threading.Event()
        self.server = ServiceServer(f"0.0.0.0:{grpc_port}", self.grpc_service)
        self.port = self.server.port
        self.endpoint = f"{advertise_host}:{self.port}"
        self.registration = Registration(client, self.service, worker_id, self.endpoint)
        self.stale_runs = StaleRunFilter(client)
        self.dropped_stale = 0

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self.server.start()
        self.registration.start()
        self.on_start()
        self.server.set_serving(True)

    def on_start(self) -> None:  # noqa: B027 - optional
        """What the worker does before it takes work (start a scoring process, load the active run's policy)."""

    def serve_forever(self) -> None:
        self.start()
        log.info("%s %s serving gRPC on %s", self.service, self.worker_id, self.endpoint)
        try:
            while not self.stop.is_set():
                try:
                    self.step()
                except redis.RedisError:
                    self.metrics.redis_errors.inc()
                    log.exception("Redis error in the work loop; retrying")
                    self.stop.wait(REDIS_RETRY_S)
        finally:
            self.shutdown()

    @abstractmethod
    def step(self) -> int:
        """One round of work; returns how many messages it read."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release what the worker holds besides Redis and gRPC (a worker process, an engine)."""

    def shutdown(self) -> None:
        self.stop.set()
        self.server.set_serving(False)
        self.registration.stop()
        self.server.stop()
        self.close()
        self.client.close()

    # --- the drop filter ---------------------------------------------------------------------------------

    def task_of(self, message: M) -> types_pb2.PromptTask:
        """The task a message is about (a PromptTask is its own; a SampleGroup carries one)."""
        return message.task  # type: ignore[attr-defined]

    def well_formed(self, task: types_pb2.PromptTask) -> bool:
        return bool(task.run_id and task.prompt_id)

    def accept(self, deliveries: Sequence[Delivery[M]], ack: Callable[[list[str]], Any]) -> list[Delivery[M]]:
        """The deliveries worth working on, in order. The others are acked (`ack`) and counted in `dropped`:
        malformed, of a run no longer active (stale), or of a prompt this worker's stage has done (duplicate;
        one pipelined check for the whole read)."""
        kept: list[Delivery[M]] = []
        for delivery in deliveries:
            task = self.task_of(delivery.message)
            if not self.well_formed(task):
                log.error("dropping malformed message %s (run %r, prompt %r)", delivery.entry_id, task.run_id,
                          task.prompt_id)
                self._drop(delivery, "malformed", ack)
            elif self.stale_runs.stale(task.run_id):
                self.dropped_stale += 1
                log.info("dropping %s/%s of a run that is no longer active (%d dropped so far)", task.run_id,
                         task.prompt_id, self.dropped_stale)
                self._drop(delivery, "stale", ack)
            else:
                kept.append(delivery)
        if self.done_stage is None or not kept:
            return kept
        pipe = self.client.pipeline(transaction=False)
        for delivery in kept:
            task = self.task_of(delivery.message)
            pipe.sismember(keys.done_key(task.run_id, self.done_stage), task.prompt_id)
        done = pipe.execute()
        fresh = []
        for delivery, already in zip(kept, done, strict=True):
            if already:  # a redelivery of work this stage has forwarded: nothing to do
                self._drop(delivery, "duplicate", ack)
            else:
                fresh.append(delivery)
        return fresh

    def _drop(self, delivery: Delivery[M], reason: str, ack: Callable[[list[str]], Any]) -> None:
        self.metrics.dropped.labels(reason).inc()
        ack([delivery.entry_id])


# --- the process around a worker ------------------------------------------------------------------------


def add_worker_arguments(parser: argparse.ArgumentParser, *, grpc_port: int) -> None:
    """The options every worker takes: Redis, its gRPC port, the address it registers, metrics and logging."""
    parser.add_argument("--redis-url", default=os.environ.get("SEMIRL_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--grpc-port", type=int, default=int(os.environ.get("SEMIRL_GRPC_PORT", str(grpc_port))))
    parser.add_argument("--advertise-host", default=os.environ.get("SEMIRL_ADVERTISE_HOST", "127.0.0.1"),
                        help="host other services use to reach this instance's gRPC port")
    parser.add_argument("--metrics-port", type=int, default=telemetry.metrics_port_from_env(),
                        help="serve Prometheus metrics at :PORT/metrics (default SEMIRL_METRICS_PORT; 0 = off)")
    parser.add_argument("--log-level", default=os.environ.get("SEMIRL_LOG_LEVEL", "INFO"))


def configure_logging(level: str, service: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format=f"%(asctime)s %(levelname)s %(name)s [{service}] %(message)s")


def serve_until_stopped(worker: Worker[Any], metrics_port: int) -> int:
    """Export metrics, stop on SIGTERM/SIGINT after the current unit of work, serve, then close the exporter.

    The exporter starts before `serve_forever`, so a long start-up (a generator loading its model) can be scraped.
    """
    metrics = telemetry.serve_metrics(metrics_port, registry=worker.metrics.registry)
    stop_on_signals(worker.stop, worker.unit)
    try:
        worker.serve_forever()
    finally:
        if metrics is not None:
            metrics.close()
    return 0


def stop_on_signals(stop: threading.Event, what: str) -> None:
    """SIGTERM and SIGINT set `stop`: the worker finishes `what` (its current batch or step) and exits."""

    def _terminate(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping after the current %s", signum, what)
        stop.set()

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
