from semirl.proto import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TransferParam(_message.Message):
    __slots__ = ("name", "dtype", "shape", "offset")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    offset: int
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ...) -> None: ...

class TransferBucket(_message.Message):
    __slots__ = ("params", "bytes")
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    params: _containers.RepeatedCompositeFieldContainer[TransferParam]
    bytes: int
    def __init__(self, params: _Optional[_Iterable[_Union[TransferParam, _Mapping]]] = ..., bytes: _Optional[int] = ...) -> None: ...

class ReceiveWeightsRequest(_message.Message):
    __slots__ = ("run_id", "version", "master_address", "master_port", "rank", "world_size", "buckets", "timeout_s", "group_name")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MASTER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MASTER_PORT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    version: int
    master_address: str
    master_port: int
    rank: int
    world_size: int
    buckets: _containers.RepeatedCompositeFieldContainer[TransferBucket]
    timeout_s: float
    group_name: str
    def __init__(self, run_id: _Optional[str] = ..., version: _Optional[int] = ..., master_address: _Optional[str] = ..., master_port: _Optional[int] = ..., rank: _Optional[int] = ..., world_size: _Optional[int] = ..., buckets: _Optional[_Iterable[_Union[TransferBucket, _Mapping]]] = ..., timeout_s: _Optional[float] = ..., group_name: _Optional[str] = ...) -> None: ...

class ReceiveWeightsResponse(_message.Message):
    __slots__ = ("policy_version", "bytes", "seconds")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    policy_version: int
    bytes: int
    seconds: float
    def __init__(self, policy_version: _Optional[int] = ..., bytes: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

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
    __slots__ = ("weights_digest",)
    WEIGHTS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    weights_digest: bool
    def __init__(self, weights_digest: _Optional[bool] = ...) -> None: ...

class GeneratorStatus(_message.Message):
    __slots__ = ("generator_id", "run_id", "policy_version", "policy_path", "engine_ready", "tasks_done", "reloads", "weights_digest")
    GENERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_PATH_FIELD_NUMBER: _ClassVar[int]
    ENGINE_READY_FIELD_NUMBER: _ClassVar[int]
    TASKS_DONE_FIELD_NUMBER: _ClassVar[int]
    RELOADS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    generator_id: str
    run_id: str
    policy_version: int
    policy_path: str
    engine_ready: bool
    tasks_done: int
    reloads: int
    weights_digest: str
    def __init__(self, generator_id: _Optional[str] = ..., run_id: _Optional[str] = ..., policy_version: _Optional[int] = ..., policy_path: _Optional[str] = ..., engine_ready: _Optional[bool] = ..., tasks_done: _Optional[int] = ..., reloads: _Optional[int] = ..., weights_digest: _Optional[str] = ...) -> None: ...
