"""Prometheus metrics: one exporter per process, serving /metrics over HTTP (port name `metrics`).

docs/architecture.md, decision 15.

Every service keeps its metric objects in its own `CollectorRegistry` (`new_registry()`: its metrics plus the
process, platform and GC collectors), never in prometheus_client's global default registry: two services, or two
instances of one service built by a test in the same process, then never collide on a metric name, and each
instance's counters start at zero. The process's entry point serves that registry with `serve_metrics`.

The port comes from `--metrics-port`, by default SEMIRL_METRICS_PORT (`metrics_port_from_env`); 0 turns the
exporter off, which is the default outside the cluster (the chart sets 9090) so local processes and tests
never fight over one port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, start_http_server
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

METRICS_PORT_ENV = "SEMIRL_METRICS_PORT"
CLUSTER_METRICS_PORT = 9090  # what the chart sets SEMIRL_METRICS_PORT to

# One set of buckets for every duration histogram: from a few ms (scoring one group) to 10 min (a 8B reload,
# a trainer step or a checkpoint write).
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                   float("inf"))


def new_registry() -> CollectorRegistry:
    """A fresh registry holding the process, platform and GC collectors (what the default registry has)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metrics_port_from_env(default: int = 0) -> int:
    """SEMIRL_METRICS_PORT as an int (unset or empty: `default`, 0 = exporter off)."""
    raw = os.environ.get(METRICS_PORT_ENV, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError as err:
        raise ValueError(f"{METRICS_PORT_ENV} must be a port number, got {raw!r}") from err
    if not 0 <= port <= 65535:
        raise ValueError(f"{METRICS_PORT_ENV} must be between 0 and 65535, got {port}")
    return port


@dataclass
class MetricsServer:
    """A running exporter (prometheus_client's WSGI server in a daemon thread)."""

    httpd: WSGIServer
    thread: threading.Thread
    registry: CollectorRegistry
    host: str
    port: int
    collectors: list[Collector] = field(default_factory=list)  # registered by serve_metrics, removed by close
    closed: bool = False

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and unregister the collectors serve_metrics added (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
        for collector in self.collectors:
            with contextlib.suppress(KeyError):
                self.registry.unregister(collector)
        self.collectors = []


def serve_metrics(
    port: int,
    *,
    host: str = "0.0.0.0",
    registry: CollectorRegistry | None = None,
    extra_collectors: Iterable[Collector] = (),
) -> MetricsServer | None:
    """Serve `registry` (None: a fresh `new_registry()`) plus `extra_collectors` at http://host:port/metrics.

    Returns None when `port` is 0 (the exporter is off). The server runs in a daemon thread; `close()` stops it.
    A port already in use raises OSError: a misconfigured exporter should fail the process at start-up, not hide.
    """
    if port == 0:
        log.info("metrics exporter off (port 0)")
        return None
    if not 0 < port <= 65535:
        raise ValueError(f"metrics port must be between 1 and 65535 (or 0 = off), got {port}")
    registry = registry if registry is not None else new_registry()
    added: list[Collector] = []
    try:
        for collector in extra_collectors:
            registry.register(collector)
            added.append(collector)
        httpd, thread = start_http_server(port, addr=host, registry=registry)
    except BaseException:
        for collector in added:
            registry.unregister(collector)
        raise
    log.info("serving Prometheus metrics on %s:%d/metrics", host, port)
    return MetricsServer(httpd, thread, registry, host, port, added)
