"""Process lifecycle shared by the worker services' entry points (generator, verifier, trainer)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Protocol

from prometheus_client import CollectorRegistry

from semirl.core import telemetry


class _Metrics(Protocol):
    registry: CollectorRegistry


class WorkerService(Protocol):
    stop: threading.Event
    metrics: _Metrics

    def serve_forever(self) -> None: ...


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


def serve_until_stopped(service: WorkerService, metrics_port: int, what: str) -> int:
    """Export metrics, stop on SIGTERM/SIGINT after the current `what`, serve, then close the exporter.

    The exporter starts before `serve_forever`, so a long start-up (a generator loading its model) can be scraped.
    """
    metrics = telemetry.serve_metrics(metrics_port, registry=service.metrics.registry)
    stop_on_signals(service.stop, what)
    try:
        service.serve_forever()
    finally:
        if metrics is not None:
            metrics.close()
    return 0


def stop_on_signals(stop: threading.Event, what: str) -> None:
    """SIGTERM and SIGINT set `stop`: the service finishes `what` (its current batch or step) and exits."""
    log = logging.getLogger("semirl.lifecycle")

    def _terminate(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping after the current %s", signum, what)
        stop.set()

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
