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
