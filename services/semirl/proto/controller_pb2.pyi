from semirl.proto import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CommitCheckpointRequest(_message.Message):
    __slots__ = ("run_id", "policy", "final", "in_memory", "transfers")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    IN_MEMORY_FIELD_NUMBER: _ClassVar[int]
    TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    policy: _types_pb2.PolicyRef
    final: bool
    in_memory: bool
    transfers: _containers.RepeatedCompositeFieldContainer[TransferOutcome]
    def __init__(self, run_id: _Optional[str] = ..., policy: _Optional[_Union[_types_pb2.PolicyRef, _Mapping]] = ..., final: _Optional[bool] = ..., in_memory: _Optional[bool] = ..., transfers: _Optional[_Iterable[_Union[TransferOutcome, _Mapping]]] = ...) -> None: ...

class PlanWeightSyncRequest(_message.Message):
    __slots__ = ("run_id", "version")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    version: int
    def __init__(self, run_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class SyncMember(_message.Message):
    __slots__ = ("generator_id", "address")
    GENERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    generator_id: str
    address: str
    def __init__(self, generator_id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class WeightSyncPlan(_message.Message):
    __slots__ = ("transport", "members", "timeout_s", "reason")
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    transport: str
    members: _containers.RepeatedCompositeFieldContainer[SyncMember]
    timeout_s: float
    reason: str
    def __init__(self, transport: _Optional[str] = ..., members: _Optional[_Iterable[_Union[SyncMember, _Mapping]]] = ..., timeout_s: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class TransferOutcome(_message.Message):
    __slots__ = ("generator_id", "ok", "bytes", "seconds", "error")
    GENERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    generator_id: str
    ok: bool
    bytes: int
    seconds: float
    error: str
    def __init__(self, generator_id: _Optional[str] = ..., ok: _Optional[bool] = ..., bytes: _Optional[int] = ..., seconds: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class CommitCheckpointResponse(_message.Message):
    __slots__ = ("committed", "error")
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    committed: bool
    error: str
    def __init__(self, committed: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class GroupUse(_message.Message):
    __slots__ = ("prompt_id", "policy_version", "trained", "skip_reason")
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    prompt_id: str
    policy_version: int
    trained: bool
    skip_reason: str
    def __init__(self, prompt_id: _Optional[str] = ..., policy_version: _Optional[int] = ..., trained: _Optional[bool] = ..., skip_reason: _Optional[str] = ...) -> None: ...

class StepReport(_message.Message):
    __slots__ = ("run_id", "step", "metrics", "groups", "resumed_from_step")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    metrics: _containers.ScalarMap[str, float]
    groups: _containers.RepeatedCompositeFieldContainer[GroupUse]
    resumed_from_step: int
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., groups: _Optional[_Iterable[_Union[GroupUse, _Mapping]]] = ..., resumed_from_step: _Optional[int] = ...) -> None: ...

class ReportStepResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    def __init__(self, cancelled: _Optional[bool] = ...) -> None: ...

class FailRunRequest(_message.Message):
    __slots__ = ("run_id", "error")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    error: str
    def __init__(self, run_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class FailRunResponse(_message.Message):
    __slots__ = ("failed",)
    FAILED_FIELD_NUMBER: _ClassVar[int]
    failed: bool
    def __init__(self, failed: _Optional[bool] = ...) -> None: ...
