"""Response schemas of the REST API: the read views (GET /v1/runs/{id}, /v1/services) and every other body it sends."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from semirl.core.runstate import EvalResult, RunRecord, RunState


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


class ReloadSummary(BaseModel):
    """How one sync's Reload fan-out went, once every generator asked has answered or timed out."""

    generators: int = Field(description="Generators asked (0: discovery found none; the pub/sub notice still went).")
    ok: int = Field(description="Generators that loaded the version.")
    load_seconds: float | None = Field(description="The slowest successful load, in seconds; null when none loaded.")
    failed: list[str] = Field(default_factory=list, description="'<generator>: <why>' of each that did not.")
    finished_at: float = Field(description="Unix time the last answer came in.")


class TransferView(BaseModel):
    """How one generator got a version in memory (or why it did not and loaded the export instead)."""

    generator: str
    ok: bool
    bytes: int = Field(description="Bytes received; 0 when the transfer failed.")
    seconds: float = Field(description="From the trainer's ReceiveWeights call to its answer.")
    error: str = ""


class WeightSync(BaseModel):
    """One weight sync: a committed policy version went to the generators, in memory to the plan's members
    (`transport` broadcast), from its export in the store to everyone else."""

    sync: int = Field(description="1-based: the n-th sync of the run (the record's `syncs` counts them).")
    policy_version: int = Field(description="The version sent: the policy after trainer step `policy_version`.")
    previous_version: int = Field(description="The version the generators were asked for before this sync.")
    trainer_step: int = Field(description="The trainer's last reported step when the sync went out.")
    window: int | None = Field(description="The sync window this sync released (0-based); null for an asynchronous "
                                           "run (sync.max_staleness), whose commits are synced as they come.")
    at: float = Field(description="Unix time the sync went out.")
    transport: Literal["broadcast", "storage"] = Field(
        "storage", description="'broadcast': the version was committed in memory, held by the generators in "
        "`transfers` with ok true; the others loaded its export. 'storage': every generator loaded the export.")
    transfers: list[TransferView] = Field(default_factory=list, description="One per member of a broadcast plan "
                                          "(also when none got the version and the sync fell back to storage).")
    reload: ReloadSummary | None = Field(None, description="How the Reload fan-out went; null until every "
                                         "generator asked has answered, and for good when a newer sync replaced it "
                                         "before it went out.")


class RunView(RunRecord, ServicesView):
    """A run as GET /v1/runs/{id} shows it."""

    evals: list[EvalResult] = Field(
        default_factory=list,
        description="One entry per evaluation set and evaluated step, ordered by step, then by the spec's set order.",
    )
    latest_metrics: dict[str, Any] = Field(default_factory=dict, description="The trainer's newest step metrics.")
    queues: dict[str, QueueDepth] = Field(default_factory=dict)
    queue_position: int | None = Field(None, description="0-based place in the run queue while queued.")


class Problem(BaseModel):
    """An error: what was wrong with the request."""

    detail: str


class FieldError(BaseModel):
    loc: list[str | int] = Field(description='Where: "body" and the path of the field inside the spec.')
    msg: str
    type: str


class SpecErrors(BaseModel):
    """A rejected spec: at most 50 errors, each message at most 500 characters."""

    detail: list[FieldError]


class RunStatus(BaseModel):
    """A run's id and state: the answer to a submission or a cancel."""

    id: str
    state: RunState
    error: str | None = Field(None, description="Why the run failed (a cancel of a run whose record does not load).")


class RunSummary(BaseModel):
    id: str
    name: str
    state: RunState
    step: int
    policy_version: int
    created_at: float | None = Field(description="Unix time; null when the run's record does not load.")
    error: str | None


class RunList(BaseModel):
    runs: list[RunSummary] = Field(description="Every run in submission order.")


class Health(BaseModel):
    status: str = Field(description="'ok' (/healthz) or 'ready' (/readyz).")


class NotReady(BaseModel):
    status: str = Field(description="'not ready'.")
    problems: list[str]
