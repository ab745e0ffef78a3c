"""The reload pub/sub listener: the controller's ReloadRequest notices on `keys.RELOAD_CHANNEL`, loaded as they
come (a generator the controller's fan-out missed still reloads; a failed load is retried by the next task of that
version). A notice that does not decode or has no path is ignored."""

from __future__ import annotations

import logging
import threading

import redis

from semirl.core import keys
from semirl.generator.engine import Policy
from semirl.generator.shared_engine import SharedEngine
from semirl.proto import generator_pb2

log = logging.getLogger(__name__)


class ReloadListener:
    def __init__(self, client: redis.Redis, engine: SharedEngine, stop: threading.Event) -> None:
        self.client = client
        self.engine = engine
        self.stop = stop
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._listen, name="reload-listener", daemon=True)
        self._thread.start()

    def join(self, timeout: float = 3.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _listen(self) -> None:
        while not self.stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(keys.RELOAD_CHANNEL)
                while not self.stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        self.on_notice(message["data"])
            except redis.RedisError:
                log.warning("reload listener lost Redis; resubscribing", exc_info=True)
                self.stop.wait(1.0)
            finally:
                pubsub.close()

    def on_notice(self, payload: bytes) -> None:
        request = generator_pb2.ReloadRequest()
        try:
            request.ParseFromString(payload)
        except Exception:  # noqa: BLE001
            log.error("ignoring an undecodable reload notice")
            return
        if not request.policy.path:
            log.error("ignoring a reload notice without a path")
            return
        try:
            result = self.engine.load(Policy(request.policy.version, request.policy.path), request.run_id)
            log.info("reload notice: v%d (%s, %.2f s)", result.version, result.mode, result.seconds)
        except Exception:  # noqa: BLE001 - the next task for that version reloads it
            log.exception("reload notice for v%d failed", request.policy.version)
