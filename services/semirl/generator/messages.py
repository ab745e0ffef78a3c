"""The generator's messages: wire tasks into engine inputs, engine outputs into wire groups. No I/O."""

from __future__ import annotations

from semirl.core.wire import prompt_format_of
from semirl.generator.engine import Generated, Prompt, Sampling
from semirl.proto import types_pb2


def sampling_from_proto(params: types_pb2.SamplingParams) -> Sampling:
    return Sampling(
        n=params.n or 1,
        temperature=params.temperature,
        top_p=params.top_p or 1.0,
        max_tokens=params.max_tokens or 128,
        seed=params.seed,
        logprobs=params.logprobs,
    )


def prompt_of(task: types_pb2.PromptTask) -> Prompt:
    return Prompt(task.prompt, prompt_format_of(task))


def sample_group(
    task: types_pb2.PromptTask,
    prompt_token_ids: list[int],
    samples: list[Generated],
    version: int,
    generator_id: str,
    seconds: float,
) -> types_pb2.SampleGroup:
    """The wire form of one prompt's samples, tagged with the policy version that produced them."""
    return types_pb2.SampleGroup(
        task=task,
        prompt_token_ids=prompt_token_ids,
        samples=samples_to_proto(samples),
        policy_version=version,
        generator_id=generator_id,
        generation_seconds=seconds,
    )


def samples_to_proto(samples: list[Generated]) -> list[types_pb2.Sample]:
    return [
        types_pb2.Sample(text=s.text, token_ids=s.token_ids, logprobs=s.logprobs, finish_reason=s.finish_reason)
        for s in samples
    ]
