"""math-verify scoring with a hard per-item timeout.

`score(response, gold)` is 1.0 when the response's `\\boxed{}` answer is mathematically equal to the gold
answer and 0.0 otherwise (wrong, no boxed answer, unparsable, timed out, any exception). It never raises.

math-verify's own timeouts use SIGALRM, which works only in a process's main thread and cannot interrupt C
code (sympy, regex backtracking) reliably. So every item is scored in a worker *process* (spawned; its main
thread runs math-verify) and the parent waits at most `timeout_s` per item: an item that overruns has its
worker killed and replaced, and scores 0.0. The next item is served by the fresh worker.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing as mp
import threading
import time
from collections.abc import Iterable, Sequence
from multiprocessing.connection import Connection

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
WORKER_START_TIMEOUT_S = 120.0
BOXED_MARKERS = ("\\boxed", "\\fbox")


# --- what runs in the worker process ------------------------------------------------------------------


def score_in_process(response: str, gold: str, inner_timeout_s: int | None = None) -> float:
    """Score in the calling process (no hard timeout of its own): the worker's body, also usable directly."""
    try:
        if not isinstance(response, str) or not isinstance(gold, str):
            return 0.0
        gold = gold.strip()
        if not gold or not any(marker in response for marker in BOXED_MARKERS):
            return 0.0
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

        # math-verify's signal timeouts only work in a main thread; elsewhere rely on the caller's hard limit.
        inner = inner_timeout_s if threading.current_thread() is threading.main_thread() else None
        gold_parsed = parse(f"$\\boxed{{{gold}}}$", parsing_timeout=inner)
        if not gold_parsed:
            gold_parsed = parse(gold, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                                parsing_timeout=inner)
        if not gold_parsed:
            return 0.0
        answer = parse(response, extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
                       parsing_timeout=inner)
        if not answer:
            return 0.0
        return 1.0 if verify(gold_parsed, answer, timeout_seconds=inner) else 0.0
    except BaseException:  # noqa: BLE001 - a scorer never raises (incl. math-verify's TimeoutException)
        return 0.0


def _worker_main(conn: Connection, inner_timeout_s: int | None) -> None:
    with contextlib.suppress(Exception):
        import math_verify  # noqa: F401 - warm the import before announcing readiness
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        tag, response, gold = message
        conn.send((tag, score_in_process(response, gold, inner_timeout_s)))


# --- the parent side -----------------------------------------------------------------------------------


class Scorer:
    """One scoring worker process, restarted whenever an item overruns its timeout or the worker dies.

    Thread-safe: calls are serialized (the service loop and gRPC threads may share one Scorer).
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, *, start_method: str = "spawn") -> None:
        self.timeout_s = timeout_s
        self._ctx = mp.get_context(start_method)
        self._lock = threading.Lock()
        self._process: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._tag = 0
        self.restarts = 0
        self.timeouts = 0

    # lifecycle

    def start(self) -> None:
        with self._lock:
            self._ensure_worker()

    def close(self) -> None:
        with self._lock:
            self._stop_worker(graceful=True)

    def __enter__(self) -> Scorer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def worker_pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.is_alive() else None

    def _ensure_worker(self) -> None:
        if self._process is not None and self._process.is_alive() and self._conn is not None:
            return
        self._stop_worker(graceful=False)
        parent, child = self._ctx.Pipe(duplex=True)
        # math-verify's own (SIGALRM) timeouts in the worker let most slow items end without a restart.
        inner = max(1, int(self.timeout_s))
        process = self._ctx.Process(target=_worker_main, args=(child, inner), name="semirl-scorer", daemon=True)
        process.start()
        child.close()
        if not parent.poll(WORKER_START_TIMEOUT_S):
            process.kill()
            process.join(5)
            parent.close()
            raise RuntimeError("scoring worker did not start")
        parent.recv()
        self._process, self._conn = process, parent

    def _stop_worker(self, *, graceful: bool) -> None:
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        if conn is not None:
            if graceful:
                with contextlib.suppress(OSError, ValueError):
                    conn.send(None)
            conn.close()
        if process is not None:
            if graceful:
                process.join(2)
            if process.is_alive():
                process.kill()
            process.join(5)

    # scoring

    def score(self, response: str, gold: str, timeout_s: float | None = None) -> float:
        return self.score_batch([(response, gold)], timeout_s)[0]

    def score_batch(self, items: Iterable[tuple[str, str]], timeout_s: float | None = None) -> list[float]:
        items = list(items)
        limit = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:
            return [self._score_one(response, gold, limit) for response, gold in items]

    def _score_one(self, response: object, gold: object, limit: float) -> float:
        if not isinstance(response, str) or not isinstance(gold, str):
            return 0.0
        if not gold.strip() or not any(marker in response for marker in BOXED_MARKERS):
            return 0.0  # no need to bother the worker
        try:
            self._ensure_worker()
        except Exception:  # noqa: BLE001
            log.exception("cannot start the scoring worker")
            return 0.0
        assert self._conn is not None
        self._tag += 1
        tag = self._tag
        try:
            self._conn.send((tag, response, gold))
            deadline = time.monotonic() + limit
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._conn.poll(remaining):
                    self.timeouts += 1
                    log.warning("scoring item exceeded %.1f s: killing and restarting the worker", limit)
                    self._restart()
                    return 0.0
                got_tag, value = self._conn.recv()
                if got_tag == tag:
                    return float(value)
        except (EOFError, OSError, ValueError, TypeError):
            log.warning("scoring worker died on an item; restarting it")
            self._restart()
            return 0.0

    def _restart(self) -> None:
        self.restarts += 1
        self._stop_worker(graceful=False)


# --- module-level convenience API ---------------------------------------------------------------------

_default: Scorer | None = None
_default_lock = threading.Lock()


def default_scorer() -> Scorer:
    global _default
    with _default_lock:
        if _default is None:
            _default = Scorer()
            atexit.register(_default.close)
        return _default


def score(response: str, gold: str, timeout_s: float | None = None) -> float:
    """1.0 if `response`'s boxed answer equals `gold`, else 0.0; never raises."""
    try:
        return default_scorer().score(response, gold, timeout_s)
    except Exception:  # noqa: BLE001
        log.exception("scoring failed")
        return 0.0


def score_batch(items: Sequence[tuple[str, str]], timeout_s: float | None = None) -> list[float]:
    """Score (response, gold) pairs in order, each under its own hard timeout; never raises."""
    try:
        return default_scorer().score_batch(items, timeout_s)
    except Exception:  # noqa: BLE001
        log.exception("batch scoring failed")
        return [0.0] * len(items)
