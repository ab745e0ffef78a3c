"""A live service instance's entry in Redis: `service_registration_key(service, id)` = its gRPC endpoint.

The key expires unless refreshed, so a killed instance disappears within `ttl_s`. Outside Kubernetes these
entries are how the controller finds generators for Reload and counts each service's replicas; in a cluster
the controller reads EndpointSlices instead (controller/discovery.py) and these keys are informational.
"""

from __future__ import annotations

import logging
import threading

import redis

from semirl.core import keys

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 15
DEFAULT_REFRESH_S = 5.0


class Registration:
    def __init__(
        self, client: redis.Redis, service: str, instance_id: str, endpoint: str,
        *, ttl_s: int = DEFAULT_TTL_S, refresh_s: float = DEFAULT_REFRESH_S,
    ) -> None:
        self.client = client
        self.key = keys.service_registration_key(service, instance_id)
        self.endpoint = endpoint
        self.ttl_s = ttl_s
        self.refresh_s = refresh_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        self.client.set(self.key, self.endpoint, ex=self.ttl_s)

    def start(self) -> None:
        self.refresh()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"registration:{self.key}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
            except redis.RedisError:
                log.warning("registration refresh of %s failed", self.key, exc_info=True)

    def stop(self) -> None:
        """Stop refreshing and remove the entry (a clean exit leaves nothing to expire)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
            self._thread = None
        try:
            self.client.delete(self.key)
        except redis.RedisError:
            log.warning("could not delete the registration key %s", self.key)


def registered(client: redis.Redis, service: str) -> dict[str, str]:
    """Live instances of `service`: instance id -> endpoint."""
    prefix = keys.service_registration_key(service, "")
    found = {}
    for key in client.scan_iter(match=f"{prefix}*", count=100):
        value = client.get(key)
        if value:
            name = key.decode() if isinstance(key, bytes) else key
            found[name[len(prefix):]] = value.decode() if isinstance(value, bytes) else value
    return found
