"""`python -m semirl.verifier`: the verifier service process (math-verify)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from semirl.core import telemetry
from semirl.core.lifecycle import stop_on_signals
from semirl.verifier.scoring import DEFAULT_TIMEOUT_S
from semirl.verifier.service import VerifierService


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="semirl.verifier", description="semirl math-verify scorer")
    parser.add_argument("--redis-url", default=os.environ.get("SEMIRL_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--grpc-port", type=int, default=int(os.environ.get("SEMIRL_GRPC_PORT", "50052")))
    parser.add_argument("--verifier-id",
                        default=os.environ.get("SEMIRL_VERIFIER_ID") or f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--timeout-s", type=float,
                        default=float(os.environ.get("SEMIRL_VERIFY_TIMEOUT_S", DEFAULT_TIMEOUT_S)),
                        help="hard per-item scoring timeout")
    parser.add_argument("--advertise-host", default=os.environ.get("SEMIRL_ADVERTISE_HOST", "127.0.0.1"),
                        help="host other services use to reach this instance's gRPC port")
    parser.add_argument("--metrics-port", type=int, default=telemetry.metrics_port_from_env(),
                        help="serve Prometheus metrics at :PORT/metrics (default SEMIRL_METRICS_PORT; 0 = off)")
    parser.add_argument("--log-level", default=os.environ.get("SEMIRL_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [verifier] %(message)s",
    )
    service = VerifierService(args.redis_url, args.grpc_port, args.verifier_id, timeout_s=args.timeout_s,
                              advertise_host=args.advertise_host)
    metrics = telemetry.serve_metrics(args.metrics_port, registry=service.metrics.registry)

    stop_on_signals(service.stop, "batch")
    try:
        service.serve_forever()
    finally:
        if metrics is not None:
            metrics.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
