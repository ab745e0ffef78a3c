"""Response schemas of the REST API's read endpoints (what GET /v1/runs/{id} and /v1/services return)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from semirl.core.runstate import EvalResult, RunRecord


class QueueDepth(BaseModel):
    lag: int = Field(description="Entries not yet delivered to the stream's consumer group.")
    pending: int = Field(description="Entries delivered but not acknowledged.")
    length: int = Field(description="Entries in the stream.")


class ReplicaCount(BaseModel):
    ready: int
    total: int = Field(description="Instances that exist, ready or not (e.g. a pod still Pending for a GPU).")


class ReloadView(BaseModel):
    generator: str
    endpoint: str
    ok: bool
    detail: str


class ServicesView(BaseModel):
    discovery: str = Field(description="Where instances come from: 'redis' registrations or 'kubernetes'.")
    replicas: dict[str, ReplicaCount] = Field(default_factory=dict)
    generators: dict[str, str] = Field(default_factory=dict, description="Generator id -> gRPC host:port.")
    discovery_error: str | None = None
    last_reload: list[ReloadView] = Field(default_factory=list, description="How the last Reload fan-out went.")


class RunView(RunRecord, ServicesView):
    """A run as GET /v1/runs/{id} shows it."""

    evals: list[EvalResult] = Field(
        default_factory=list,
        description="One entry per evaluation set and evaluated step, ordered by step, then by the spec's set order.",
    )
    latest_metrics: dict[str, Any] = Field(default_factory=dict, description="The trainer's newest step metrics.")
    queues: dict[str, QueueDepth] = Field(default_factory=dict)
    queue_position: int | None = Field(None, description="0-based place in the run queue while queued.")
