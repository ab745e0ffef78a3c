"""`python -m semirl.controller`: the REST API (uvicorn) and the internal gRPC server in one process."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

import uvicorn

from semirl.core import telemetry
from semirl.core.redis_client import connect

from .app import create_app
from .controller import DEFAULT_TRANSFER_TIMEOUT_S, Controller
from .discovery import discovery_from_env
from .grpc_api import build_grpc_server
from .metrics import ControllerCollector
from .tracking import RunTracking, TrackingSettings
from .tracking_exporters import exporters_from

log = logging.getLogger("semirl.controller")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semirl.controller", description=__doc__)
    parser.add_argument("--redis-url", default=os.environ.get("SEMIRL_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--store", default=os.environ.get("SEMIRL_STORE"), help="checkpoint store root")
    parser.add_argument("--host", default=os.environ.get("SEMIRL_CONTROLLER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SEMIRL_CONTROLLER_PORT", "8080")))
    parser.add_argument("--grpc-port", type=int, default=int(
        os.environ.get("SEMIRL_CONTROLLER_GRPC_PORT") or os.environ.get("SEMIRL_GRPC_PORT") or "50051"))
    parser.add_argument("--metrics-port", type=int, default=telemetry.metrics_port_from_env(),
                        help="serve Prometheus metrics at :PORT/metrics (default SEMIRL_METRICS_PORT; 0 = off)")
    parser.add_argument("--log-level", default=os.environ.get("SEMIRL_LOG_LEVEL", "INFO"))
    parser.add_argument("--reload-timeout", type=float, default=float(os.environ.get("SEMIRL_RELOAD_TIMEOUT_S") or 60),
                        help="seconds one generator's Reload (verify + load a checkpoint) may take "
                             "(default SEMIRL_RELOAD_TIMEOUT_S, else 60; the chart sets 600)")
    parser.add_argument("--transfer-timeout", type=float,
                        default=float(os.environ.get("SEMIRL_TRANSFER_TIMEOUT_S") or DEFAULT_TRANSFER_TIMEOUT_S),
                        help="seconds a generator of an in-memory weight sync may take before it is dropped and "
                             "loads the export instead (default SEMIRL_TRANSFER_TIMEOUT_S, else "
                             f"{DEFAULT_TRANSFER_TIMEOUT_S:.0f})")
    args = parser.parse_args(argv)
    if not args.store:
        parser.error("--store (or SEMIRL_STORE) is required")
    if args.reload_timeout <= 0:
        parser.error("--reload-timeout (SEMIRL_RELOAD_TIMEOUT_S) must be positive")
    if args.transfer_timeout <= 0:
        parser.error("--transfer-timeout (SEMIRL_TRANSFER_TIMEOUT_S) must be positive")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    client = connect(args.redis_url)
    os.makedirs(args.store, exist_ok=True)
    try:
        discovery = discovery_from_env(client)
    except ValueError as err:
        parser.error(str(err))
    try:
        tracking_settings = TrackingSettings.from_env()
        exporters = exporters_from(tracking_settings, Path(args.store))
    except (ValueError, ImportError) as err:  # a bad setting, or the tracking packages missing from the image
        parser.error(f"run tracking (SEMIRL_MLFLOW_* / SEMIRL_WANDB_* / SEMIRL_ARTIFACT_URI): {err}")
    controller = Controller(client, args.store, discovery=discovery, reload_timeout_s=args.reload_timeout,
                            transfer_timeout_s=args.transfer_timeout)
    tracking = RunTracking(client, controller.run_store, exporters, tracking_settings.poll_s) if exporters else None
    grpc_server = build_grpc_server(controller, f"0.0.0.0:{args.grpc_port}")
    api_token = os.environ.get("SEMIRL_API_TOKEN") or None
    if api_token is None:
        log.warning("SEMIRL_API_TOKEN is not set: anyone who reaches the REST port can submit and cancel runs")
    app = create_app(controller, api_token=api_token)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    # uvicorn installs its own SIGINT/SIGTERM handlers while it serves; it returns from run() on either.
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))

    metrics = telemetry.serve_metrics(args.metrics_port, extra_collectors=[ControllerCollector(controller)])
    grpc_server.start()
    controller.start()
    if tracking is not None:
        tracking.start()
        log.info("run tracking: %s", ", ".join(e.name for e in exporters))
    grpc_server.set_serving(True)
    log.info("controller: REST on %s:%d, gRPC on %d, store %s", args.host, args.port, grpc_server.port, args.store)
    try:
        server.run()
    finally:
        grpc_server.set_serving(False)
        if tracking is not None:
            tracking.close()
        controller.stop()
        grpc_server.stop()
        if metrics is not None:
            metrics.close()
        client.close()
    log.info("controller stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
