"""Tell generators to load a committed policy version: gRPC Reload to every registered endpoint (in parallel,
dead ones tolerated) plus a Redis PUBLISH on RELOAD_CHANNEL for any generator that missed the call."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import redis

from semirl.core import keys
from semirl.core.grpc_server import channel
from semirl.proto import generator_pb2, generator_pb2_grpc, types_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadOutcome:
    generator_id: str
    endpoint: str
    ok: bool
    detail: str = ""


def _reload_one(generator_id: str, endpoint: str, request: generator_pb2.ReloadRequest,
                timeout_s: float) -> ReloadOutcome:
    try:
        with channel(endpoint) as chan:
            response = generator_pb2_grpc.GeneratorServiceStub(chan).Reload(request, timeout=timeout_s)
        return ReloadOutcome(generator_id, endpoint, True,
                             f"v{response.policy_version} in {response.seconds:.2f}s reloaded={response.reloaded}")
    except grpc.RpcError as err:
        code = err.code() if hasattr(err, "code") else None
        log.warning("generator %s at %s did not reload (%s)", generator_id, endpoint, code)
        return ReloadOutcome(generator_id, endpoint, False, str(code))


def fan_out_reload(
    client: redis.Redis,
    run_id: str,
    policy: types_pb2.PolicyRef,
    endpoints: dict[str, str],
    *,
    timeout_s: float = 60.0,
) -> list[ReloadOutcome]:
    """Reload on every endpoint (generator id -> host:port), then publish the request on RELOAD_CHANNEL."""
    request = generator_pb2.ReloadRequest(run_id=run_id, policy=policy)
    outcomes: list[ReloadOutcome] = []
    if endpoints:
        with ThreadPoolExecutor(max_workers=min(16, len(endpoints))) as pool:
            futures = [pool.submit(_reload_one, gid, ep, request, timeout_s) for gid, ep in sorted(endpoints.items())]
            outcomes = [f.result() for f in futures]
    try:
        client.publish(keys.RELOAD_CHANNEL, request.SerializeToString())
    except redis.RedisError as err:
        log.warning("could not publish reload notice: %s", err)
    log.info("reload v%d of %s: %d/%d generators answered", policy.version, run_id,
             sum(o.ok for o in outcomes), len(outcomes))
    return outcomes
