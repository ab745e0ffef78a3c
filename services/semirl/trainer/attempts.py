"""The trainer's consecutive attempts at one run, counted in Redis so that they outlive the trainer process.

An attempt is counted when it starts, not when it fails: a multi-rank job whose rank failed exits the whole job
(trainer/ranks.py), and a pod can be OOM-killed, so the process that failed may never reach an `except`. A trained
step ends the streak; a graceful stop (SIGTERM) takes its attempt back. A deterministic start failure (a missing
package, a model that does not fit) so fails the run with its reason after MAX_ATTEMPTS starts, however often the job
restarts in between (docs/architecture.md, "multi-rank trainer").
"""

from __future__ import annotations

import redis

from semirl.core import keys

MAX_ATTEMPTS = 3  # consecutive attempts at one run with no trained step between them before the run is failed
RETAIN_S = 7 * 24 * 3600  # a run left behind (controller gone) does not keep its counter forever
MAX_REASON_CHARS = 2000


class RunAttempts:
    """`begin` / `failed` / `trained` / `withdrawn` for the attempts at each run (one Redis hash per run)."""

    def __init__(self, client: redis.Redis, limit: int = MAX_ATTEMPTS) -> None:
        self.client = client
        self.limit = limit

    def begin(self, run_id: str) -> int:
        """Count a new attempt; returns its number (1 for the first since the last trained step)."""
        key = keys.run_trainer_attempts_key(run_id)
        with self.client.pipeline() as pipe:
            pipe.hincrby(key, "count", 1)
            pipe.expire(key, RETAIN_S)
            number, _ = pipe.execute()
        return int(number)

    def exhausted(self, number: int) -> bool:
        return number > self.limit

    def failed(self, run_id: str, reason: str, *, after_a_step: bool = False) -> int:
        """Record why an attempt failed; returns the streak's length. An attempt that had trained a step before it
        failed ended the old streak (`trained`) and now opens a new one of length 1."""
        key = keys.run_trainer_attempts_key(run_id)
        with self.client.pipeline() as pipe:
            pipe.hset(key, "last_error", reason[:MAX_REASON_CHARS])
            pipe.hincrby(key, "count", 1 if after_a_step else 0)
            pipe.expire(key, RETAIN_S)
            _, number, _ = pipe.execute()
        return int(number)

    def last_error(self, run_id: str) -> str:
        raw = self.client.hget(keys.run_trainer_attempts_key(run_id), "last_error")
        return raw.decode() if isinstance(raw, bytes) else (raw or "")

    def exhausted_reason(self, run_id: str, number: int) -> str:
        last = self.last_error(run_id) or "the trainer process ended without a report (killed, or out of memory)"
        return f"trainer started run {number - 1} times in a row without training a step; last failure: {last}"

    def trained(self, run_id: str) -> None:
        """A step trained (or the run finished or left): the streak ends."""
        self.client.delete(keys.run_trainer_attempts_key(run_id))

    def withdrawn(self, run_id: str) -> None:
        """The attempt ended by a graceful stop, not by a failure: it does not count."""
        key = keys.run_trainer_attempts_key(run_id)
        if self.client.hincrby(key, "count", -1) <= 0:
            self.client.delete(key)
