"""Tell generators to load a committed policy version: gRPC Reload to every registered endpoint (in parallel,
dead ones tolerated) plus a Redis PUBLISH on RELOAD_CHANNEL for any generator that missed the call.

The scheduler never waits for a Reload (docs/architecture.md, decision 30): it hands the request to a
`ReloadDispatcher` and goes on. A Reload only saves a generator the load it would otherwise do when the first
task of the new version reaches it, so nothing waits for one to finish, and a frozen generator delays only
itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
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
    run_id: str = ""
    version: int = -1
    seconds: float = 0.0  # what the generator's load of this version took (by this call or by a task before it)


def _reload_one(generator_id: str, endpoint: str, request: generator_pb2.ReloadRequest,
                timeout_s: float) -> ReloadOutcome:
    try:
        with channel(endpoint) as chan:
            response = generator_pb2_grpc.GeneratorServiceStub(chan).Reload(request, timeout=timeout_s)
        return ReloadOutcome(generator_id, endpoint, True,
                             f"v{response.policy_version} in {response.seconds:.2f}s reloaded={response.reloaded}",
                             request.run_id, int(request.policy.version), float(response.load_seconds))
    except grpc.RpcError as err:
        code = err.code() if hasattr(err, "code") else None
        log.warning("generator %s at %s did not reload (%s)", generator_id, endpoint, code)
        return ReloadOutcome(generator_id, endpoint, False, str(code), request.run_id, int(request.policy.version))


def _status_of(endpoint: str, timeout_s: float) -> generator_pb2.GeneratorStatus | None:
    try:
        with channel(endpoint) as chan:
            return generator_pb2_grpc.GeneratorServiceStub(chan).Status(generator_pb2.GeneratorStatusRequest(),
                                                                        timeout=timeout_s)
    except grpc.RpcError:
        return None


def generator_statuses(endpoints: dict[str, str], timeout_s: float) -> list[generator_pb2.GeneratorStatus]:
    """The Status of every endpoint that answers within `timeout_s` (asked in parallel; call it outside the lock)."""
    if not endpoints:
        return []
    with ThreadPoolExecutor(max_workers=min(32, len(endpoints))) as pool:
        answers = list(pool.map(lambda endpoint: _status_of(endpoint, timeout_s), endpoints.values()))
    return [status for status in answers if status is not None]


FanoutDone = Callable[[list[ReloadOutcome]], None]


def _report(done: FanoutDone | None, outcomes: list[ReloadOutcome]) -> None:
    if done is None:
        return
    try:
        done(outcomes)
    except Exception:  # noqa: BLE001 - a failed report must not strand the generator's call slot
        log.exception("recording a reload fan-out failed")


class ReloadDispatcher:
    """Sends Reloads in the background: `request` returns at once; a dispatcher thread publishes the notice,
    asks `endpoints()` for the generators and gives each its own call. A generator has at most one Reload in
    flight; a newer request for it waits behind that call and replaces any older one waiting, so a frozen
    generator collects one pending request, not a queue, and holds up no other generator.

    A request's `on_done` gets every generator's outcome once all have answered or timed out (from a call's
    thread); it is never called for a request that a newer one replaced before that."""

    def __init__(self, client: redis.Redis, endpoints: Callable[[], dict[str, str]], *, timeout_s: float) -> None:
        self.client = client
        self.endpoints = endpoints
        self.timeout_s = timeout_s
        self.last_outcomes: list[ReloadOutcome] = []  # of the newest request; replaced whole, never mutated
        self._changed = threading.Condition()
        self._requested: generator_pb2.ReloadRequest | None = None  # not yet dispatched
        self._requested_done: FanoutDone | None = None
        self._current: generator_pb2.ReloadRequest | None = None  # the newest dispatched request
        self._current_done: FanoutDone | None = None
        self._asked: frozenset[str] = frozenset()  # the generators the current request went to
        self._dispatching = False  # a request taken but its calls not started yet
        self._in_flight: set[str] = set()
        self._waiting: dict[str, tuple[str, generator_pb2.ReloadRequest]] = {}
        self._outcomes: dict[str, ReloadOutcome] = {}
        self._stopped = False
        self._thread: threading.Thread | None = None

    def request(self, run_id: str, policy: types_pb2.PolicyRef, on_done: FanoutDone | None = None) -> None:
        """Ask every generator to load `policy` (replaces a request not yet dispatched)."""
        with self._changed:
            self._requested = generator_pb2.ReloadRequest(run_id=run_id, policy=policy)
            self._requested_done = on_done
            if self._thread is None or not self._thread.is_alive():
                self._stopped = False
                self._thread = threading.Thread(target=self._dispatch_loop, name="reload-dispatcher", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every requested Reload was answered or timed out; False if that took over `timeout_s`."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._requested is None and not self._dispatching and not self._in_flight, timeout_s)

    def _dispatch_loop(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._stopped or self._requested is not None)
                if self._stopped:
                    return
                request, self._requested = self._requested, None
                self._dispatching = True
                self._current, self._current_done = request, self._requested_done
                self._outcomes = {}
                self.last_outcomes = []
            assert request is not None
            try:
                self.client.publish(keys.RELOAD_CHANNEL, request.SerializeToString())
            except redis.RedisError as err:
                log.warning("could not publish reload notice: %s", err)
            try:
                endpoints = self.endpoints()
            except Exception:  # noqa: BLE001 - the notice above still reaches every generator
                log.exception("generator discovery failed; this reload goes out by pub/sub only")
                endpoints = {}
            log.info("reload v%d of %s: asking %d generators", request.policy.version, request.run_id,
                     len(endpoints))
            with self._changed:
                self._asked = frozenset(endpoints)
                for generator_id, endpoint in sorted(endpoints.items()):
                    if generator_id in self._in_flight:
                        self._waiting[generator_id] = (endpoint, request)
                    else:
                        self._start_call(generator_id, endpoint, request)
                done = self._completed(request)
            _report(done, [])  # no generator to ask, or None
            with self._changed:
                self._dispatching = False
                self._changed.notify_all()

    def _completed(self, request: generator_pb2.ReloadRequest) -> FanoutDone | None:
        """The on_done to call now that `request` has every answer (once); under `_changed`."""
        if request is not self._current or set(self._outcomes) != self._asked or self._current_done is None:
            return None
        done, self._current_done = self._current_done, None
        return done

    def _start_call(self, generator_id: str, endpoint: str, request: generator_pb2.ReloadRequest) -> None:
        self._in_flight.add(generator_id)
        threading.Thread(target=self._call, args=(generator_id, endpoint, request),
                         name=f"reload:{generator_id}", daemon=True).start()

    def _call(self, generator_id: str, endpoint: str, request: generator_pb2.ReloadRequest) -> None:
        outcome = _reload_one(generator_id, endpoint, request, self.timeout_s)
        with self._changed:
            if request is self._current:
                self._outcomes[generator_id] = outcome
                self.last_outcomes = [self._outcomes[g] for g in sorted(self._outcomes)]
            done, outcomes = self._completed(request), self.last_outcomes
        _report(done, outcomes)  # before the call counts as ended, so that wait_idle waits for it too
        with self._changed:
            self._in_flight.discard(generator_id)
            waiting = self._waiting.pop(generator_id, None)
            if waiting is not None:
                self._start_call(generator_id, *waiting)
            self._changed.notify_all()
