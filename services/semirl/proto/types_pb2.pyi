from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RewardSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REWARD_SOURCE_UNSPECIFIED: _ClassVar[RewardSource]
    REWARD_SOURCE_VERIFIER: _ClassVar[RewardSource]
    REWARD_SOURCE_REWARD_MODEL: _ClassVar[RewardSource]

class TaskPurpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_PURPOSE_UNSPECIFIED: _ClassVar[TaskPurpose]
    TASK_PURPOSE_TRAIN: _ClassVar[TaskPurpose]
    TASK_PURPOSE_EVAL: _ClassVar[TaskPurpose]

class PromptFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROMPT_FORMAT_UNSPECIFIED: _ClassVar[PromptFormat]
    PROMPT_FORMAT_CHAT: _ClassVar[PromptFormat]
    PROMPT_FORMAT_RAW: _ClassVar[PromptFormat]

class AnswerFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANSWER_FORMAT_UNSPECIFIED: _ClassVar[AnswerFormat]
    ANSWER_FORMAT_LATEX: _ClassVar[AnswerFormat]
    ANSWER_FORMAT_BOXED: _ClassVar[AnswerFormat]
REWARD_SOURCE_UNSPECIFIED: RewardSource
REWARD_SOURCE_VERIFIER: RewardSource
REWARD_SOURCE_REWARD_MODEL: RewardSource
TASK_PURPOSE_UNSPECIFIED: TaskPurpose
TASK_PURPOSE_TRAIN: TaskPurpose
TASK_PURPOSE_EVAL: TaskPurpose
PROMPT_FORMAT_UNSPECIFIED: PromptFormat
PROMPT_FORMAT_CHAT: PromptFormat
PROMPT_FORMAT_RAW: PromptFormat
ANSWER_FORMAT_UNSPECIFIED: AnswerFormat
ANSWER_FORMAT_LATEX: AnswerFormat
ANSWER_FORMAT_BOXED: AnswerFormat

class SamplingParams(_message.Message):
    __slots__ = ("n", "temperature", "top_p", "max_tokens", "seed", "logprobs")
    N_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    logprobs: bool
    def __init__(self, n: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_tokens: _Optional[int] = ..., seed: _Optional[int] = ..., logprobs: _Optional[bool] = ...) -> None: ...

class PolicyRef(_message.Message):
    __slots__ = ("version", "path")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    version: int
    path: str
    def __init__(self, version: _Optional[int] = ..., path: _Optional[str] = ...) -> None: ...

class PromptTask(_message.Message):
    __slots__ = ("run_id", "prompt_id", "attempt", "purpose", "prompt", "gold_answer", "reward_source", "sampling", "policy", "window", "eval_step", "train_step", "eval_set", "prompt_format", "answer_format", "oldest_policy")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    GOLD_ANSWER_FIELD_NUMBER: _ClassVar[int]
    REWARD_SOURCE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    EVAL_STEP_FIELD_NUMBER: _ClassVar[int]
    TRAIN_STEP_FIELD_NUMBER: _ClassVar[int]
    EVAL_SET_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FORMAT_FIELD_NUMBER: _ClassVar[int]
    OLDEST_POLICY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    prompt_id: str
    attempt: int
    purpose: TaskPurpose
    prompt: str
    gold_answer: str
    reward_source: RewardSource
    sampling: SamplingParams
    policy: PolicyRef
    window: int
    eval_step: int
    train_step: int
    eval_set: str
    prompt_format: PromptFormat
    answer_format: AnswerFormat
    oldest_policy: PolicyRef
    def __init__(self, run_id: _Optional[str] = ..., prompt_id: _Optional[str] = ..., attempt: _Optional[int] = ..., purpose: _Optional[_Union[TaskPurpose, str]] = ..., prompt: _Optional[str] = ..., gold_answer: _Optional[str] = ..., reward_source: _Optional[_Union[RewardSource, str]] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., policy: _Optional[_Union[PolicyRef, _Mapping]] = ..., window: _Optional[int] = ..., eval_step: _Optional[int] = ..., train_step: _Optional[int] = ..., eval_set: _Optional[str] = ..., prompt_format: _Optional[_Union[PromptFormat, str]] = ..., answer_format: _Optional[_Union[AnswerFormat, str]] = ..., oldest_policy: _Optional[_Union[PolicyRef, _Mapping]] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("text", "token_ids", "logprobs", "finish_reason")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    finish_reason: str
    def __init__(self, text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., logprobs: _Optional[_Iterable[float]] = ..., finish_reason: _Optional[str] = ...) -> None: ...

class SampleGroup(_message.Message):
    __slots__ = ("task", "prompt_token_ids", "samples", "policy_version", "generator_id", "generation_seconds")
    TASK_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    task: PromptTask
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    policy_version: int
    generator_id: str
    generation_seconds: float
    def __init__(self, task: _Optional[_Union[PromptTask, _Mapping]] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ..., policy_version: _Optional[int] = ..., generator_id: _Optional[str] = ..., generation_seconds: _Optional[float] = ...) -> None: ...

class ScoredGroup(_message.Message):
    __slots__ = ("group", "rewards", "scorer_id")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    SCORER_ID_FIELD_NUMBER: _ClassVar[int]
    group: SampleGroup
    rewards: _containers.RepeatedScalarFieldContainer[float]
    scorer_id: str
    def __init__(self, group: _Optional[_Union[SampleGroup, _Mapping]] = ..., rewards: _Optional[_Iterable[float]] = ..., scorer_id: _Optional[str] = ...) -> None: ...
