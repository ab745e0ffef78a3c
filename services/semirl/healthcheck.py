"""`python -m semirl.healthcheck`: exit 0 when a service is healthy, 1 when not (images' HEALTHCHECK, helm test).

    python -m semirl.healthcheck --grpc HOST:PORT [--service readiness]   # grpc.health.v1/Check
    python -m semirl.healthcheck --http http://HOST:PORT/readyz            # HTTP 2xx

Several targets may be given; every one must be healthy. Only the standard library, grpcio and httpx are used,
so the check runs in every image without a shell or extra tools.
"""

from __future__ import annotations

import argparse
import sys

import httpx

from semirl.core.grpc_server import READINESS, check_health


def http_ok(url: str, timeout: float) -> bool:
    try:
        return httpx.get(url, timeout=timeout).is_success
    except httpx.HTTPError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semirl.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--grpc", action="append", default=[], metavar="HOST:PORT", help="gRPC health target")
    parser.add_argument("--service", default=READINESS, help="gRPC health service name (default: readiness)")
    parser.add_argument("--http", action="append", default=[], metavar="URL", help="HTTP URL that must answer 2xx")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per target")
    args = parser.parse_args(argv)
    if not args.grpc and not args.http:
        parser.error("give at least one --grpc or --http target")
    healthy = True
    for target in args.grpc:
        ok = check_health(target, timeout=args.timeout, service=args.service)
        print(f"grpc {target} [{args.service}]: {'SERVING' if ok else 'NOT SERVING'}")
        healthy &= ok
    for url in args.http:
        ok = http_ok(url, args.timeout)
        print(f"http {url}: {'ok' if ok else 'FAILED'}")
        healthy &= ok
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
