"""The Redis client every service uses: a dead or black-holed connection fails within seconds instead of hanging.

Without socket timeouts a blocking read (XREADGROUP BLOCK) on a connection whose peer vanished without a reset —
a Redis pod rescheduled to another node, a network partition — waits forever while the process still looks
healthy. The read timeout sits well above the longest blocking read the services issue (a few seconds), keepalive
probes notice dead peers on idle connections, and a periodic PING checks a pooled connection before reuse.
"""

from __future__ import annotations

import redis

SOCKET_TIMEOUT_S = 30.0          # longest blocking command: XREADGROUP BLOCK of at most a few seconds
CONNECT_TIMEOUT_S = 10.0
HEALTH_CHECK_INTERVAL_S = 30


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_keepalive=True,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )
