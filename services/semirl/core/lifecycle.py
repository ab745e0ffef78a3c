"""Process lifecycle shared by the service entry points."""

from __future__ import annotations

import logging
import signal
import threading


def stop_on_signals(stop: threading.Event, what: str) -> None:
    """SIGTERM and SIGINT set `stop`: the service finishes `what` (its current batch or step) and exits."""
    log = logging.getLogger("semirl.lifecycle")

    def _terminate(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping after the current %s", signum, what)
        stop.set()

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
