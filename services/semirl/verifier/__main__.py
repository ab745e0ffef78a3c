"""`python -m semirl.verifier`: the verifier service process (math-verify)."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from semirl.core.lifecycle import add_worker_arguments, configure_logging, serve_until_stopped
from semirl.verifier.scoring import DEFAULT_TIMEOUT_S
from semirl.verifier.service import VerifierService


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="semirl.verifier", description="semirl math-verify scorer")
    add_worker_arguments(parser, grpc_port=50052)
    parser.add_argument("--verifier-id",
                        default=os.environ.get("SEMIRL_VERIFIER_ID") or f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--timeout-s", type=float,
                        default=float(os.environ.get("SEMIRL_VERIFY_TIMEOUT_S", DEFAULT_TIMEOUT_S)),
                        help="hard per-item scoring timeout")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, "verifier")
    service = VerifierService(args.redis_url, args.grpc_port, args.verifier_id, timeout_s=args.timeout_s,
                              advertise_host=args.advertise_host)
    return serve_until_stopped(service, args.metrics_port, "batch")


if __name__ == "__main__":
    sys.exit(main())
