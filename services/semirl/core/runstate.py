"""The run record kept in Redis. The controller is its only writer; every service may read it."""

from __future__ import annotations

import time
from typing import Literal

import redis
from pydantic import BaseModel, Field

from semirl.core import keys
from semirl.spec import RunSpec

RunState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class EvalResult(BaseModel):
    step: int                      # trainer step whose policy was evaluated (0 = seed)
    policy_version: int
    accuracy: float                # pass@1 averaged over samples_per_prompt samples
    prompts: int
    samples: int
    mean_response_tokens: float


class RunRecord(BaseModel):
    id: str
    name: str
    state: RunState = "queued"
    spec: RunSpec
    run_dir: str                   # absolute directory of this run in the checkpoint store
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    step: int = 0                  # last trainer step reported
    policy_version: int = 0        # last committed policy version (0 = seed)
    policy_path: str = ""          # directory of that version (the seed model's path for version 0)
    generation_version: int = 0    # version the released prompts require
    windows_released: int = 0
    syncs: int = 0                 # generator reload fan-outs (weight syncs)
    resumed_from_step: int = 0
    final_path: str | None = None
    error: str | None = None
    evals: list[EvalResult] = Field(default_factory=list)
    counters: dict[str, int] = Field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


def load_run(client: redis.Redis, run_id: str) -> RunRecord | None:
    raw = client.get(keys.run_key(run_id))
    return RunRecord.model_validate_json(raw) if raw else None


def save_run(client: redis.Redis, record: RunRecord) -> None:
    client.set(keys.run_key(record.id), record.model_dump_json())


def active_run_id(client: redis.Redis) -> str | None:
    raw = client.get(keys.ACTIVE_RUN)
    return raw.decode() if isinstance(raw, bytes) else raw


def active_run(client: redis.Redis) -> RunRecord | None:
    run_id = active_run_id(client)
    return load_run(client, run_id) if run_id else None


class StaleRunFilter:
    """Tells workers whether a task's run is no longer active, caching Redis lookups for `ttl_s`.

    A run is stale when ACTIVE_RUN names a different run, or when its record exists in a terminal state. An
    unset ACTIVE_RUN alone (e.g. mid-activation) never makes a run stale.
    """

    def __init__(self, client: redis.Redis, ttl_s: float = 1.0) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._active: tuple[float, str | None] | None = None
        self._finished: dict[str, tuple[float, bool]] = {}

    def _active_id(self) -> str | None:
        now = time.monotonic()
        if self._active is None or now - self._active[0] > self.ttl_s:
            self._active = (now, active_run_id(self.client))
        return self._active[1]

    def _is_finished(self, run_id: str) -> bool:
        now = time.monotonic()
        cached = self._finished.get(run_id)
        if cached is None or now - cached[0] > self.ttl_s:
            if len(self._finished) > 1000:
                self._finished.clear()
            try:
                record = load_run(self.client, run_id)
            except ValueError:  # a malformed record: not ours to judge here
                record = None
            cached = (now, record is not None and record.finished)
            self._finished[run_id] = cached
        return cached[1]

    def stale(self, run_id: str) -> bool:
        active = self._active_id()
        if active and active != run_id:
            return True
        return self._is_finished(run_id)
