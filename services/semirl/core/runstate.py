"""The run record kept in Redis. The controller is its only writer; every service may read it."""

from __future__ import annotations

import time
from typing import Literal

import redis
from pydantic import BaseModel, Field, ValidationError

from semirl.core import keys
from semirl.spec import RunSpec

RunState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class EvalResult(BaseModel):
    """One evaluation set scored on one evaluated policy."""

    step: int = Field(description="Trainer step whose policy was evaluated (0 = the seed).")
    eval_set: str = Field(description="The evaluation set (its `name` in data.eval).")
    policy_version: int = Field(description="Committed policy version that generated the samples.")
    accuracy: float = Field(
        description="pass@1 averaged over the samples: correct samples / samples_expected. A sample that was "
        "asked for but never came back (failed or empty generation) counts as wrong.",
    )
    stderr: float | None = Field(
        description="Standard error of `accuracy` over prompts: the sample standard deviation (n-1) of the "
        "per-prompt mean accuracy divided by sqrt(prompts). Null with fewer than two prompts.",
    )
    prompts: int = Field(description="Prompts of the set in this round.")
    samples_per_prompt: int = Field(description="Samples asked for per prompt.")
    samples_expected: int = Field(description="prompts x samples_per_prompt: the denominator of `accuracy`.")
    samples_scored: int = Field(description="Samples that came back and were scored.")
    failed_prompts: int = Field(
        description="Prompts whose generation failed or came back with fewer samples than asked (an empty group).",
    )
    mean_response_tokens: float = Field(description="Mean response length of the scored samples, in tokens.")
    mean_score: float | None = Field(None, description="Reward-model prompts of the set: their mean score over "
                                     "the scored samples (`accuracy` is then the mean reward with a missing sample "
                                     "scoring 0).")
    mean_score_per_token: float | None = Field(None, description="Reward-model prompts: the mean of score ÷ "
                                               "response tokens (the paper's length-normalized checkpoint choice).")


class BestCheckpoint(BaseModel):
    """The best evaluated policy so far by the spec's `eval.best_by`, exported to the run's best/ directory."""

    step: int
    eval_set: str
    metric: str
    value: float
    path: str


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
    best: BestCheckpoint | None = None
    error: str | None = None
    evals: list[EvalResult] = Field(default_factory=list)
    counters: dict[str, int] = Field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class RunRecordUnreadable(ValueError):  # noqa: N818
    """A stored run record that does not load (corrupt JSON, or a spec this release no longer accepts).

    Such a run counts as failed: nothing can advance it, and its bytes are left in Redis for inspection.
    """

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__(f"run record {run_id} is unreadable: {reason}")
        self.run_id = run_id
        self.reason = reason


def load_run(client: redis.Redis, run_id: str) -> RunRecord | None:
    """The run's record; None when there is none, RunRecordUnreadable when it is stored but does not load."""
    raw = client.get(keys.run_key(run_id))
    if not raw:
        return None
    try:
        return RunRecord.model_validate_json(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}"
                             for e in err.errors(include_url=False)[:3])
        raise RunRecordUnreadable(run_id, problems) from err


def save_run(client: redis.Redis, record: RunRecord) -> None:
    client.set(keys.run_key(record.id), record.model_dump_json())


def active_run_id(client: redis.Redis) -> str | None:
    raw = client.get(keys.ACTIVE_RUN)
    return raw.decode() if isinstance(raw, bytes) else raw


def active_run(client: redis.Redis) -> RunRecord | None:
    run_id = active_run_id(client)
    return load_run(client, run_id) if run_id else None


class StaleRunFilter:
    """Tells workers whether a task's run has ended (succeeded, failed or cancelled), so its leftover tasks
    are dropped instead of served.

    Only the run's own terminal state counts. Tasks exist only for the active run (the controller releases
    nothing for queued runs), and a run stops being active only by ending; comparing against a cached
    ACTIVE_RUN instead would drop the first tasks of the next run during the cache's lifetime. An ended run
    stays ended, so that answer is cached for good; "still running" is re-checked after `ttl_s`.
    """

    def __init__(self, client: redis.Redis, ttl_s: float = 1.0) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._ended: set[str] = set()
        self._running_checked: dict[str, float] = {}

    def stale(self, run_id: str) -> bool:
        if run_id in self._ended:
            return True
        now = time.monotonic()
        checked = self._running_checked.get(run_id)
        if checked is not None and now - checked <= self.ttl_s:
            return False
        try:
            record = load_run(self.client, run_id)
        except ValueError:  # a malformed record: not ours to judge here
            record = None
        if record is not None and record.finished:
            self._ended.add(run_id)
            self._running_checked.pop(run_id, None)
            return True
        if len(self._running_checked) > 1000:
            self._running_checked.clear()
        self._running_checked[run_id] = now
        return False
