"""The verifier's engine: math-verify scoring with a hard per-item timeout. No Redis, no gRPC.

`score(response, gold)` is 1.0 when the response's final answer is mathematically equal to the gold answer and
0.0 otherwise (wrong, no answer found, unparsable, timed out, any exception). It never raises. How the answer
is found is the item's `AnswerFormat`:

- LATEX (the default): the paper's scoring, fairseq2's `MathVerifyVerifier` (Lanchantin et al. 2025): math-verify's
  `math_metric` with gold extraction `LatexExtractionConfig()` (the gold wrapped as `$gold$`), prediction
  extraction `LatexExtractionConfig(boxed_match_priority=0)`, aggregation max, precision 6. A `\\boxed{}` answer
  is taken first, else any LaTeX-delimited one ("The final answer is $\\frac{1}{2}$", "answer: $3$").
- BOXED: the same comparison, but only the response's `\\boxed{}` expressions are shown to it, so a response
  without one scores 0 (stricter: for a format-following reward, or models trained to box their answers).

math-verify's own timeouts use SIGALRM, which works only in a process's main thread and cannot interrupt C
code (sympy, regex backtracking) reliably. So items are scored in a worker *process* (spawned; its main thread
runs math-verify), a whole batch per message and all its verdicts back in one, and the parent allows each item
at most `timeout_s` from the moment the worker starts it (the worker records that, and each verdict, in shared
memory): an item that overruns has its worker killed and replaced, and scores 0.0, as does an item the worker
dies on; the verdicts before it are kept and the items after it go to the fresh worker.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import logging
import math
import multiprocessing as mp
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from semirl.core.wire import AnswerFormat

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
WORKER_START_TIMEOUT_S = 120.0
MAX_BATCH = 4096  # items per message to the worker (the size of the shared progress arrays)
BOXED_MARKERS = ("\\boxed",)
_BOXED_OPEN = re.compile(r"\\boxed\{")  # the spelling math-verify reads


# --- what runs in the worker process ------------------------------------------------------------------


@functools.cache
def paper_metric() -> Callable[[list[str], list[str]], tuple[float, Any]]:
    """fairseq2's MathVerifyVerifier metric, as the paper ran it."""
    from math_verify import LatexExtractionConfig, math_metric

    return math_metric(
        gold_extraction_target=(LatexExtractionConfig(),),
        pred_extraction_target=(LatexExtractionConfig(boxed_match_priority=0),),
        aggregation_function=max,
        precision=6,
    )


def gold_text(gold: str) -> str:
    """The gold answer as the paper's verifier hands it to math-verify: in `$...$` so the LaTeX extractor finds it."""
    return gold if gold.startswith("$") else f"${gold}$"


def boxed_only(response: str) -> str:
    """The response's outermost `\\boxed{...}` expressions, nothing else.

    Several are kept together, as in the full response, so the paper's metric reads them the same way (a set).
    """
    closing = _matching_braces(response)
    spans: list[str] = []
    covered_to = -1
    for match in _BOXED_OPEN.finditer(response):
        opened = match.end() - 1
        closed = closing.get(opened)
        if closed is None or match.start() < covered_to:
            continue  # unbalanced, or nested inside a box already taken
        spans.append(f"\\boxed{{{response[opened + 1:closed]}}}")
        covered_to = closed
    return " ".join(spans)


def _matching_braces(text: str) -> dict[int, int]:
    """Position of each `{` -> position of its `}`, in one pass (a quadratic rescan per box could be slow)."""
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for brace in re.finditer(r"[{}]", text):
        if brace.group() == "{":
            stack.append(brace.start())
        elif stack:
            pairs[stack.pop()] = brace.start()
    return pairs


def score_in_process(response: str, gold: str, answer_format: AnswerFormat = AnswerFormat.LATEX) -> float:
    """Score in the calling process, with no hard timeout of its own: the worker's body, also usable directly.

    Call it in a main thread: math-verify's inner timeouts use SIGALRM and fail (scoring 0) anywhere else.
    """
    try:
        if not isinstance(response, str) or not isinstance(gold, str) or not gold.strip():
            return 0.0
        prediction = boxed_only(response) if answer_format == AnswerFormat.BOXED else response
        if not prediction.strip():
            return 0.0
        grade, _extracted = paper_metric()([gold_text(gold)], [prediction])
        return 1.0 if grade == 1 else 0.0
    except BaseException:  # noqa: BLE001 - a scorer never raises (incl. math-verify's TimeoutException)
        return 0.0


Item = tuple[object, object, AnswerFormat]  # (response, gold, how the response's answer is found)


SharedDoubles = ctypes.Array[ctypes.c_double]


def _worker_main(conn: Connection, started: SharedDoubles, verdicts: SharedDoubles) -> None:
    # math_metric logs a warning for every response it finds no answer in: noise at RL sample rates.
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    with contextlib.suppress(Exception):
        paper_metric()  # warm the import before announcing readiness
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        tag, items = message
        out: list[float] = []
        for index, (response, gold, answer_format) in enumerate(items):
            started[index] = time.monotonic()  # CLOCK_MONOTONIC: the same clock as the parent's
            verdict = score_in_process(response, gold, AnswerFormat(answer_format))
            verdicts[index] = verdict
            out.append(verdict)
        conn.send((tag, out))


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
        # Written by the worker as it goes: when it started item i of the batch, and item i's verdict (NaN until
        # scored). Only read when a batch's reply is late, to tell which item is overrunning.
        self._started = self._ctx.RawArray(ctypes.c_double, MAX_BATCH)
        self._verdicts = self._ctx.RawArray(ctypes.c_double, MAX_BATCH)
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
        process = self._ctx.Process(target=_worker_main, args=(child, self._started, self._verdicts),
                                    name="semirl-scorer", daemon=True)
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

    def score(self, response: str, gold: str, timeout_s: float | None = None, *,
              answer_format: AnswerFormat = AnswerFormat.LATEX) -> float:
        return self.score_batch([(response, gold)], timeout_s, answer_format=answer_format)[0]

    def score_batch(self, items: Iterable[tuple[str, str]], timeout_s: float | None = None, *,
                    answer_format: AnswerFormat = AnswerFormat.LATEX) -> list[float]:
        """Score (response, gold) pairs in order, all read in `answer_format`, each under its own hard timeout."""
        answer_format = AnswerFormat(answer_format)
        return self.score_items([(response, gold, answer_format) for response, gold in items], timeout_s)

    def score_items(self, items: Sequence[Item], timeout_s: float | None = None) -> list[float]:
        """Score (response, gold, answer format) items in order, each under its own hard timeout, sent to the
        worker in as few messages as MAX_BATCH allows."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        scores = [0.0] * len(items)
        todo = [index for index, (response, gold, fmt) in enumerate(items) if _worth_scoring(response, gold, fmt)]
        with self._lock:
            while todo:
                batch = todo[:MAX_BATCH]
                try:
                    self._ensure_worker()
                except Exception:  # noqa: BLE001
                    log.exception("cannot start the scoring worker")
                    return scores  # what is left scores 0
                done = self._score_on_worker([items[index] for index in batch], limit)
                for index, verdict in zip(batch, done, strict=False):
                    scores[index] = verdict
                # An item that timed out or killed the worker scored 0 (the verdict after the last one returned).
                todo = todo[min(len(done) + 1, len(batch)):]
        return scores

    def _score_on_worker(self, batch: list[Item], limit: float) -> list[float]:
        """The verdicts of `batch` in order, up to the item that overran `limit` or that the worker died on
        (not included; the worker is then replaced): all of them when neither happened."""
        assert self._conn is not None
        self._tag += 1
        tag = self._tag
        self._started[:len(batch)] = [0.0] * len(batch)
        self._verdicts[:len(batch)] = [math.nan] * len(batch)
        try:
            self._conn.send((tag, [(response, gold, fmt.value) for response, gold, fmt in batch]))
            watched = (0, 0.0)  # (first item without a verdict, its start time) when last looked at
            deadline = time.monotonic() + limit
            while True:
                if self._conn.poll(max(0.0, deadline - time.monotonic())):
                    got_tag, verdicts = self._conn.recv()
                    if got_tag == tag:
                        return [float(verdict) for verdict in verdicts]
                    continue
                progress = self._progress(watched[0], len(batch))
                if progress == watched:  # no verdict and no new item since the deadline was set: overran
                    self.timeouts += 1
                    log.warning("scoring item exceeded %.1f s: killing and restarting the worker", limit)
                    return self._replace_worker(progress[0])
                watched = progress
                deadline = (progress[1] or time.monotonic()) + limit
        except (EOFError, OSError, ValueError, TypeError):
            log.warning("scoring worker died on an item; restarting it")
            return self._replace_worker(self._progress(0, len(batch))[0])

    def _progress(self, start: int, size: int) -> tuple[int, float]:
        """The first item from `start` without a verdict, and when the worker started it (0.0: not yet)."""
        index = start
        while index < size and not math.isnan(self._verdicts[index]):
            index += 1
        return index, (self._started[index] if index < size else 0.0)

    def _replace_worker(self, scored: int) -> list[float]:
        """Stop the worker; the verdicts it wrote for the batch's first `scored` items."""
        self.restarts += 1
        self._stop_worker(graceful=False)
        return list(self._verdicts[:scored])


def _worth_scoring(response: object, gold: object, answer_format: AnswerFormat) -> bool:
    """False for items that score 0 whatever math-verify says (checked in the parent: cheap, no worker round trip)."""
    if not isinstance(response, str) or not isinstance(gold, str) or not gold.strip() or not response.strip():
        return False
    return answer_format != AnswerFormat.BOXED or any(marker in response for marker in BOXED_MARKERS)


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


def score(response: str, gold: str, timeout_s: float | None = None, *,
          answer_format: AnswerFormat = AnswerFormat.LATEX) -> float:
    """1.0 if `response`'s final answer (found as `answer_format` says) equals `gold`, else 0.0; never raises."""
    try:
        return default_scorer().score(response, gold, timeout_s, answer_format=answer_format)
    except Exception:  # noqa: BLE001
        log.exception("scoring failed")
        return 0.0


def score_batch(items: Sequence[tuple[str, str]], timeout_s: float | None = None, *,
                answer_format: AnswerFormat = AnswerFormat.LATEX) -> list[float]:
    """Score (response, gold) pairs in order, each under its own hard timeout; never raises."""
    try:
        return default_scorer().score_batch(items, timeout_s, answer_format=answer_format)
    except Exception:  # noqa: BLE001
        log.exception("batch scoring failed")
        return [0.0] * len(items)
