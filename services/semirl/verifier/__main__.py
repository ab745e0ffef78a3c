"""`python -m semirl.verifier`: the verifier service process (math-verify)."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from semirl.core.redis_client import connect
from semirl.core.worker import add_worker_arguments, configure_logging, serve_until_stopped
from semirl.proto import verifier_pb2_grpc
from semirl.verifier.engine import DEFAULT_TIMEOUT_S, Scorer
from semirl.verifier.grpc_api import VerifierServicer
from semirl.verifier.loop import VerifierWorker
from semirl.verifier.metrics import VerifierMetrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="semirl.verifier", description="semirl math-verify scorer")
    add_worker_arguments(parser, grpc_port=50052)
    parser.add_argument("--verifier-id",
                        default=os.environ.get("SEMIRL_VERIFIER_ID") or f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--timeout-s", type=float,
                        default=float(os.environ.get("SEMIRL_VERIFY_TIMEOUT_S", DEFAULT_TIMEOUT_S)),
                        help="hard per-item scoring timeout")
    return parser.parse_args(argv)


def build_verifier(redis_url: str, grpc_port: int, verifier_id: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                   advertise_host: str = "127.0.0.1", batch_size: int = 16) -> VerifierWorker:
    """The verifier worker with its servicer: one scoring worker process serves both."""
    scorer = Scorer(timeout_s)
    metrics = VerifierMetrics(scorer)
    worker = VerifierWorker(connect(redis_url), verifier_id, scorer, metrics, grpc_port=grpc_port,
                            timeout_s=timeout_s, batch_size=batch_size, advertise_host=advertise_host)
    worker.server.add(verifier_pb2_grpc.add_VerifierServiceServicer_to_server,
                      VerifierServicer(scorer, timeout_s, metrics))
    return worker


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, "verifier")
    worker = build_verifier(args.redis_url, args.grpc_port, args.verifier_id, timeout_s=args.timeout_s,
                            advertise_host=args.advertise_host)
    return serve_until_stopped(worker, args.metrics_port)


if __name__ == "__main__":
    sys.exit(main())
