from semirl.proto import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateRequest(_message.Message):
    __slots__ = ("prompts", "sampling", "policy")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedScalarFieldContainer[str]
    sampling: _types_pb2.SamplingParams
    policy: _types_pb2.PolicyRef
    def __init__(self, prompts: _Optional[_Iterable[str]] = ..., sampling: _Optional[_Union[_types_pb2.SamplingParams, _Mapping]] = ..., policy: _Optional[_Union[_types_pb2.PolicyRef, _Mapping]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[_types_pb2.SampleGroup]
    def __init__(self, groups: _Optional[_Iterable[_Union[_types_pb2.SampleGroup, _Mapping]]] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ("run_id", "policy")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    policy: _types_pb2.PolicyRef
    def __init__(self, run_id: _Optional[str] = ..., policy: _Optional[_Union[_types_pb2.PolicyRef, _Mapping]] = ...) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("policy_version", "seconds", "reloaded", "load_seconds")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    RELOADED_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    policy_version: int
    seconds: float
    reloaded: bool
    load_seconds: float
    def __init__(self, policy_version: _Optional[int] = ..., seconds: _Optional[float] = ..., reloaded: _Optional[bool] = ..., load_seconds: _Optional[float] = ...) -> None: ...

class GeneratorStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GeneratorStatus(_message.Message):
    __slots__ = ("generator_id", "run_id", "policy_version", "policy_path", "engine_ready", "tasks_done", "reloads")
    GENERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_PATH_FIELD_NUMBER: _ClassVar[int]
    ENGINE_READY_FIELD_NUMBER: _ClassVar[int]
    TASKS_DONE_FIELD_NUMBER: _ClassVar[int]
    RELOADS_FIELD_NUMBER: _ClassVar[int]
    generator_id: str
    run_id: str
    policy_version: int
    policy_path: str
    engine_ready: bool
    tasks_done: int
    reloads: int
    def __init__(self, generator_id: _Optional[str] = ..., run_id: _Optional[str] = ..., policy_version: _Optional[int] = ..., policy_path: _Optional[str] = ..., engine_ready: _Optional[bool] = ..., tasks_done: _Optional[int] = ..., reloads: _Optional[int] = ...) -> None: ...
