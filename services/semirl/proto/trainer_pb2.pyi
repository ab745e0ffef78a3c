from semirl.proto import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrainerStatus(_message.Message):
    __slots__ = ("trainer_id", "run_id", "step", "total_steps", "policy_version", "resumed_from_step", "state")
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    trainer_id: str
    run_id: str
    step: int
    total_steps: int
    policy_version: int
    resumed_from_step: int
    state: str
    def __init__(self, trainer_id: _Optional[str] = ..., run_id: _Optional[str] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., policy_version: _Optional[int] = ..., resumed_from_step: _Optional[int] = ..., state: _Optional[str] = ...) -> None: ...

class RankCommand(_message.Message):
    __slots__ = ("idle", "start_run", "train_step", "save_state", "end_run", "shutdown", "gather_policy", "send_policy")
    IDLE_FIELD_NUMBER: _ClassVar[int]
    START_RUN_FIELD_NUMBER: _ClassVar[int]
    TRAIN_STEP_FIELD_NUMBER: _ClassVar[int]
    SAVE_STATE_FIELD_NUMBER: _ClassVar[int]
    END_RUN_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    GATHER_POLICY_FIELD_NUMBER: _ClassVar[int]
    SEND_POLICY_FIELD_NUMBER: _ClassVar[int]
    idle: RankIdle
    start_run: RankStartRun
    train_step: RankTrainStep
    save_state: RankSaveState
    end_run: RankEndRun
    shutdown: RankShutdown
    gather_policy: RankGatherPolicy
    send_policy: RankSendPolicy
    def __init__(self, idle: _Optional[_Union[RankIdle, _Mapping]] = ..., start_run: _Optional[_Union[RankStartRun, _Mapping]] = ..., train_step: _Optional[_Union[RankTrainStep, _Mapping]] = ..., save_state: _Optional[_Union[RankSaveState, _Mapping]] = ..., end_run: _Optional[_Union[RankEndRun, _Mapping]] = ..., shutdown: _Optional[_Union[RankShutdown, _Mapping]] = ..., gather_policy: _Optional[_Union[RankGatherPolicy, _Mapping]] = ..., send_policy: _Optional[_Union[RankSendPolicy, _Mapping]] = ...) -> None: ...

class RankIdle(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RankStartRun(_message.Message):
    __slots__ = ("run_id", "spec_json", "resume_step", "resume_dir")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    RESUME_STEP_FIELD_NUMBER: _ClassVar[int]
    RESUME_DIR_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    spec_json: str
    resume_step: int
    resume_dir: str
    def __init__(self, run_id: _Optional[str] = ..., spec_json: _Optional[str] = ..., resume_step: _Optional[int] = ..., resume_dir: _Optional[str] = ...) -> None: ...

class RankTrainStep(_message.Message):
    __slots__ = ("step", "groups")
    STEP_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    step: int
    groups: _containers.RepeatedCompositeFieldContainer[_types_pb2.ScoredGroup]
    def __init__(self, step: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[_types_pb2.ScoredGroup, _Mapping]]] = ...) -> None: ...

class RankGatherPolicy(_message.Message):
    __slots__ = ("step",)
    STEP_FIELD_NUMBER: _ClassVar[int]
    step: int
    def __init__(self, step: _Optional[int] = ...) -> None: ...

class RankSendPolicy(_message.Message):
    __slots__ = ("step", "bucket_bytes")
    STEP_FIELD_NUMBER: _ClassVar[int]
    BUCKET_BYTES_FIELD_NUMBER: _ClassVar[int]
    step: int
    bucket_bytes: int
    def __init__(self, step: _Optional[int] = ..., bucket_bytes: _Optional[int] = ...) -> None: ...

class RankSaveState(_message.Message):
    __slots__ = ("step", "directory")
    STEP_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    step: int
    directory: str
    def __init__(self, step: _Optional[int] = ..., directory: _Optional[str] = ...) -> None: ...

class RankEndRun(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RankShutdown(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
