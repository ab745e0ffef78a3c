"""Waiting out an outage: exponential backoff whose waits keep the other trainer ranks' heartbeat going.

docs/architecture.md, decision 25: the trainer waits out an unreachable Redis or controller for as long as it
takes; while rank 0 waits, the other ranks must still hear from it every few seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0
HEARTBEAT_S = 2.0


def delays() -> Iterator[float]:
    """0.5, 1, 2, 4, 8, 10, 10, … seconds."""
    delay = FIRST_DELAY_S
    while True:
        yield delay
        delay = min(delay * 2, MAX_DELAY_S)


def pause(stop: threading.Event, seconds: float, heartbeat: Callable[[], None] | None = None) -> None:
    """Sleep `seconds` (less if `stop` is set), calling `heartbeat` at least every HEARTBEAT_S."""
    deadline = time.monotonic() + seconds
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
        stop.wait(min(left, HEARTBEAT_S))
        if heartbeat is not None:
            heartbeat()
