"""The generator as a real process: real vLLM (CPU), real Redis, real gRPC; one engine for the whole module."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis
import torch
from service_process import ServiceProcess, running_service
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from semirl.core import keys
from semirl.core.checkpoint_store import staged_directory, verify
from semirl.core.grpc_server import channel
from semirl.core.redis_server import EmbeddedRedis
from semirl.core.streams import publish
from semirl.proto import generator_pb2, generator_pb2_grpc, types_pb2

PROMPT = "What is 1 + 2?"
LINES = [
    "What is 1 + 2? The answer is \\boxed{3}.",
    "Compute 7 * 8 = 56, so the answer is \\boxed{56}.",
    "The quick brown fox jumps over the lazy dog.",
    "hello world, semi-online DPO with a tiny llama",
] * 10


def build_tiny_llama(directory: Path, seed: int, *, chat_template: bool = True, layers: int = 2) -> None:
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from semirl.tinymodel.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(LINES, vocab_size=300)
    if not chat_template:
        tokenizer.chat_template = None
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, head_dim=32, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id).save_pretrained(
        directory
    )


@dataclass
class Models:
    seed: Path       # version 0: no manifest
    v2: Path         # version 2: written through staged_directory, so it has a verified manifest
    plain: Path      # no chat template; 3 layers, so loading it rebuilds the engine (in place keeps the tokenizer)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("models")
    seed = root / "seed"
    build_tiny_llama(seed, seed=0)
    v2 = root / "store" / "runs" / "r1" / "policy" / "v2"
    with staged_directory(v2) as staging:
        build_tiny_llama(staging, seed=1)
    verify(v2)
    plain = root / "plain"
    build_tiny_llama(plain, seed=2, chat_template=False, layers=3)
    return Models(seed, v2, plain)


@dataclass
class Generator(ServiceProcess):
    generator_id: str
    client: redis.Redis

    def stub(self) -> generator_pb2_grpc.GeneratorServiceStub:
        return generator_pb2_grpc.GeneratorServiceStub(channel(self.target))


@pytest.fixture(scope="module")
def generator(redis_server: EmbeddedRedis, models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    Generator
]:
    client = redis_server.client()
    client.flushall()
    args = ["--generator-id", "gen-test", "--max-model-len", "256"]
    with running_service("generator", redis_server.url, tmp_path_factory.mktemp("generator"), args,
                         env={"VLLM_CPU_KVCACHE_SPACE": "1"}, start_timeout_s=120, poll_s=0.5,
                         stop_timeout_s=30) as process:
        yield Generator(**vars(process), generator_id="gen-test", client=client)
    assert client.get(keys.service_registration_key("generator", "gen-test")) is None  # deregistered on clean exit
    client.close()


def _greedy(stub: generator_pb2_grpc.GeneratorServiceStub, policy: types_pb2.PolicyRef | None = None) -> list[int]:
    request = generator_pb2.GenerateRequest(
        prompts=[PROMPT], sampling=types_pb2.SamplingParams(n=1, temperature=0.0, max_tokens=12)
    )
    if policy is not None:
        request.policy.CopyFrom(policy)
    response = stub.Generate(request, timeout=120)
    return list(response.groups[0].samples[0].token_ids)


def test_registers_its_endpoint_with_a_ttl(generator: Generator) -> None:
    key = keys.service_registration_key("generator", generator.generator_id)
    assert generator.client.get(key) == generator.target.encode()
    assert 0 < generator.client.ttl(key) <= 15


def test_generate_returns_n_samples_with_one_logprob_per_token(generator: Generator, models: Models) -> None:
    stub = generator.stub()
    status = stub.Status(generator_pb2.GeneratorStatusRequest(), timeout=10)
    assert status.generator_id == "gen-test"
    with pytest.raises(grpc.RpcError) as err:  # nothing loaded yet and no policy named
        stub.Generate(generator_pb2.GenerateRequest(prompts=[PROMPT]), timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    request = generator_pb2.GenerateRequest(
        prompts=[PROMPT, "Compute 7 * 8"],
        sampling=types_pb2.SamplingParams(n=3, temperature=1.0, top_p=1.0, max_tokens=10, seed=7, logprobs=True),
        policy=types_pb2.PolicyRef(version=0, path=str(models.seed)),
    )
    response = stub.Generate(request, timeout=120)
    assert len(response.groups) == 2
    tokenizer = AutoTokenizer.from_pretrained(models.seed)
    for prompt, group in zip(request.prompts, response.groups, strict=True):
        assert group.policy_version == 0
        assert list(group.prompt_token_ids) == tokenizer(prompt)["input_ids"]  # Generate's prompts are raw text
        assert len(group.samples) == 3
        for sample in group.samples:
            assert 0 < len(sample.token_ids) <= 10
            assert len(sample.logprobs) == len(sample.token_ids)
            assert all(math.isfinite(lp) and lp <= 0.0 for lp in sample.logprobs)
            assert sample.finish_reason in {"length", "stop"}
    status = stub.Status(generator_pb2.GeneratorStatusRequest(), timeout=10)
    assert status.engine_ready and status.policy_version == 0
    assert Path(status.policy_path) == models.seed.resolve()


def test_seeded_prompts_beyond_one_prefill_step_are_generated(generator: Generator, models: Models) -> None:
    """Evaluation prompts are seeded. 160 of ~60 tokens are more than vLLM's 4,096-token step budget, so with
    chunked prefill some prefill is split, which vLLM 0.32 on CPU cannot do for a seeded request (the whole batch
    failed); the generator turns chunking off on CPU. Seeded sampling stays reproducible."""
    stub = generator.stub()
    prompts = [f"Add these numbers, step by step: {' '.join(str(i + k) for k in range(24))}" for i in range(160)]
    request = generator_pb2.GenerateRequest(
        prompts=prompts, sampling=types_pb2.SamplingParams(n=2, temperature=1.0, top_p=1.0, max_tokens=4, seed=11),
        policy=types_pb2.PolicyRef(version=0, path=str(models.seed)))
    first = stub.Generate(request, timeout=600)
    prompt_tokens = sum(len(g.prompt_token_ids) for g in first.groups)
    assert len(first.groups) == 160 and prompt_tokens > 4096
    again = stub.Generate(request, timeout=600)
    assert [[list(s.token_ids) for s in g.samples] for g in again.groups] == [
        [list(s.token_ids) for s in g.samples] for g in first.groups]


def test_reload_changes_version_and_greedy_output(generator: Generator, models: Models) -> None:
    stub = generator.stub()
    before = _greedy(stub, types_pb2.PolicyRef(version=0, path=str(models.seed)))
    assert before == _greedy(stub)  # greedy is deterministic
    reloads = stub.Status(generator_pb2.GeneratorStatusRequest(), timeout=10).reloads
    response = stub.Reload(
        generator_pb2.ReloadRequest(run_id="r1", policy=types_pb2.PolicyRef(version=2, path=str(models.v2))),
        timeout=120,
    )
    assert response.reloaded and response.policy_version == 2
    assert response.seconds < 10
    status = stub.Status(generator_pb2.GeneratorStatusRequest(), timeout=10)
    assert status.policy_version == 2 and status.reloads == reloads + 1 and status.run_id == "r1"
    after = _greedy(stub)
    assert after != before
    again = stub.Reload(
        generator_pb2.ReloadRequest(run_id="r1", policy=types_pb2.PolicyRef(version=2, path=str(models.v2))),
        timeout=60,
    )
    assert not again.reloaded and again.seconds == 0.0
    assert again.load_seconds == response.load_seconds > 0  # what loading v2 took, for the step breakdown
    with pytest.raises(grpc.RpcError) as err:  # not a model directory: refused, current policy kept
        stub.Reload(generator_pb2.ReloadRequest(policy=types_pb2.PolicyRef(version=3, path="/nonexistent")),
                    timeout=60)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert stub.Status(generator_pb2.GeneratorStatusRequest(), timeout=10).policy_version == 2


def _task(prompt_id: str, models: Models, version: int = 0,
          prompt_format: types_pb2.PromptFormat.ValueType = types_pb2.PROMPT_FORMAT_UNSPECIFIED,
          path: Path | None = None, logprobs: bool = False) -> types_pb2.PromptTask:
    path = path or (models.seed if version == 0 else models.v2)
    return types_pb2.PromptTask(
        run_id="r1", prompt_id=prompt_id, attempt=0, purpose=types_pb2.TASK_PURPOSE_TRAIN, prompt=PROMPT,
        gold_answer="3", reward_source=types_pb2.REWARD_SOURCE_VERIFIER,
        sampling=types_pb2.SamplingParams(n=2, temperature=1.0, top_p=0.9, max_tokens=8, seed=1,
                                          logprobs=logprobs),
        policy=types_pb2.PolicyRef(version=version, path=str(path)), window=0, prompt_format=prompt_format,
    )


def _publish_together(client: redis.Redis, *tasks: types_pb2.PromptTask) -> None:
    """One MULTI/EXEC: the generator reads them in one batch, so they are generated in one vLLM call."""
    with client.pipeline(transaction=True) as pipe:
        for task in tasks:
            publish(pipe, keys.PROMPTS, task)
        pipe.execute()


def _groups_for(client: redis.Redis, prompt_ids: set[str], timeout: float = 60.0) -> dict[str, types_pb2.SampleGroup]:
    deadline = time.monotonic() + timeout
    while True:
        groups = {}
        for _id, fields in client.xrange(keys.TO_VERIFY):
            group = types_pb2.SampleGroup()
            group.ParseFromString(fields[b"pb"])
            if group.task.prompt_id in prompt_ids:
                groups[group.task.prompt_id] = group
        if set(groups) == prompt_ids:
            return groups
        assert time.monotonic() < deadline, f"groups for {sorted(prompt_ids - set(groups))} never came"
        time.sleep(0.1)


def _user_turn(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                              tokenize=True, return_dict=False))


def _wait_len(client: redis.Redis, stream: str, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.xlen(stream) < n:
        assert time.monotonic() < deadline, f"{stream} has {client.xlen(stream)} entries, wanted {n}"
        time.sleep(0.1)


def test_prompt_task_yields_exactly_one_sample_group(generator: Generator, models: Models) -> None:
    client = generator.client
    # Loaded: v2 (previous test). The task requires v0, so the generator reloads before serving it.
    publish(client, keys.PROMPTS, _task("p-1", models, version=0))
    _wait_len(client, keys.TO_VERIFY, 1)
    publish(client, keys.PROMPTS, _task("p-1", models, version=0))  # a redelivery of the same prompt
    publish(client, keys.PROMPTS, _task("p-2", models, version=2, logprobs=True))
    _wait_len(client, keys.TO_VERIFY, 2)
    time.sleep(1.0)
    entries = client.xrange(keys.TO_VERIFY)
    assert len(entries) == 2, generator.tail()
    groups = []
    for _id, fields in entries:
        group = types_pb2.SampleGroup()
        group.ParseFromString(fields[b"pb"])
        groups.append(group)
    by_prompt = {g.task.prompt_id: g for g in groups}
    assert set(by_prompt) == {"p-1", "p-2"}
    assert by_prompt["p-1"].policy_version == 0 and by_prompt["p-2"].policy_version == 2
    for group in groups:
        assert group.generator_id == "gen-test" and len(group.samples) == 2
        assert all(len(s.token_ids) > 0 for s in group.samples)
    # Logprobs only where the task asks for them (an objective that reads the behaviour policy's).
    assert all(len(s.logprobs) == len(s.token_ids) for s in by_prompt["p-2"].samples)
    assert all(math.isfinite(lp) and lp <= 0.0 for s in by_prompt["p-2"].samples for lp in s.logprobs)
    assert all(len(s.logprobs) == 0 for s in by_prompt["p-1"].samples)
    assert client.xlen(keys.TO_REWARD) == 0
    assert client.smembers(keys.done_key("r1", "generate")) == {b"p-1", b"p-2"}
    deadline = time.monotonic() + 10
    while client.xpending(keys.PROMPTS, keys.GENERATORS_GROUP)["pending"]:
        assert time.monotonic() < deadline, "tasks left unacked"
        time.sleep(0.1)
    status = generator.stub().Status(generator_pb2.GeneratorStatusRequest(), timeout=10)
    assert status.tasks_done == 2


def test_a_prompt_vllm_rejects_yields_one_empty_sample_group(generator: Generator, models: Models) -> None:
    client = generator.client
    before = client.xlen(keys.TO_VERIFY)
    task = _task("p-long", models, version=0)
    task.prompt = "hello world, semi-online DPO with a tiny llama " * 100  # far past max_model_len=256
    publish(client, keys.PROMPTS, task)
    _wait_len(client, keys.TO_VERIFY, before + 1)
    time.sleep(0.5)
    entries = client.xrange(keys.TO_VERIFY)
    assert len(entries) == before + 1, generator.tail()
    group = types_pb2.SampleGroup()
    group.ParseFromString(entries[-1][1][b"pb"])
    assert group.task.prompt_id == "p-long" and len(group.samples) == 0
    assert group.policy_version == 0
    assert client.sismember(keys.done_key("r1", "generate"), "p-long")
    assert client.xpending(keys.PROMPTS, keys.GENERATORS_GROUP)["pending"] == 0


def test_chat_and_raw_tasks_served_together(generator: Generator, models: Models) -> None:
    client = generator.client
    tokenizer = AutoTokenizer.from_pretrained(models.seed)
    bos = tokenizer.bos_token_id
    _publish_together(
        client,
        _task("p-chat", models, prompt_format=types_pb2.PROMPT_FORMAT_CHAT),
        _task("p-raw", models, prompt_format=types_pb2.PROMPT_FORMAT_RAW),
        _task("p-unspecified", models),
    )
    groups = _groups_for(client, {"p-chat", "p-raw", "p-unspecified"})
    chat = list(groups["p-chat"].prompt_token_ids)
    # The tokens vLLM generated from: the chat template's user turn and generation prompt, one BOS in front.
    assert chat == _user_turn(tokenizer, PROMPT)
    assert chat[0] == bos and chat.count(bos) == 1
    assert tokenizer.decode(chat).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    raw = tokenizer(PROMPT)["input_ids"]  # as before chat prompts existed: vLLM tokenizes the text itself
    assert list(groups["p-raw"].prompt_token_ids) == raw == list(groups["p-unspecified"].prompt_token_ids)
    assert raw.count(bos) == 1
    for group in groups.values():
        assert group.policy_version == 0 and len(group.samples) == 2
        assert all(len(s.token_ids) > 0 for s in group.samples)


def test_reload_notice_on_pubsub(generator: Generator, models: Models) -> None:
    stub = generator.stub()
    request = generator_pb2.ReloadRequest(run_id="r1", policy=types_pb2.PolicyRef(version=2, path=str(models.v2)))
    current = stub.Status(generator_pb2.GeneratorStatusRequest(), timeout=10).policy_version
    target = 0 if current == 2 else 2
    request.policy.CopyFrom(types_pb2.PolicyRef(version=target, path=str(models.seed if target == 0 else models.v2)))
    generator.client.publish(keys.RELOAD_CHANNEL, request.SerializeToString())
    deadline = time.monotonic() + 30
    while stub.Status(generator_pb2.GeneratorStatusRequest(), timeout=10).policy_version != target:
        assert time.monotonic() < deadline, generator.tail()
        time.sleep(0.1)


def test_generator_started_mid_run_loads_the_committed_version(
    generator: Generator, models: Models, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    from semirl.core.runstate import RunRecord, save_run
    from semirl.spec import RunSpec

    spec = RunSpec.model_validate({
        "name": "late-start", "model": {"path": str(models.seed), "max_model_len": 256},
        "data": {"train": {"path": "unused.jsonl"}}, "sync": {"interval": 2}, "train": {"steps": 4},
    })
    record = RunRecord(id="r1", name="late-start", state="running", spec=spec, run_dir=str(models.v2.parents[1]),
                       policy_version=2, policy_path=str(models.v2), generation_version=2)
    save_run(generator.client, record)
    generator.client.set(keys.ACTIVE_RUN, "r1")
    args = ["--generator-id", "gen-late"]
    # Healthy (SERVING) only after the start-up load.
    with running_service("generator", redis_server.url, tmp_path, args, env={"VLLM_CPU_KVCACHE_SPACE": "1"},
                         start_timeout_s=120, poll_s=0.5, stop_timeout_s=30) as late:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel(late.target))
        status = stub.Status(generator_pb2.GeneratorStatusRequest(), timeout=10)
        assert status.engine_ready and status.policy_version == 2 and status.run_id == "r1"
        assert Path(status.policy_path) == models.v2.resolve()


def test_a_generator_without_a_model_imports_vllm_before_it_serves(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """`semirl up` starts generators without a model: vLLM's import (8-12 s of a core) happens at start-up, so a
    first run waits only for the engine build (docs/architecture.md, decision 46)."""
    client = redis.Redis.from_url(redis_server.url)
    active = client.get(keys.ACTIVE_RUN)
    client.delete(keys.ACTIVE_RUN)  # no run to join: a generator started mid-run would load its version instead
    try:
        with running_service("generator", redis_server.url, tmp_path, ["--generator-id", "gen-no-model"],
                             start_timeout_s=120, poll_s=0.5, stop_timeout_s=30) as bare:
            stub = generator_pb2_grpc.GeneratorServiceStub(channel(bare.target))
            status = stub.Status(generator_pb2.GeneratorStatusRequest(), timeout=10)
            assert not status.engine_ready and status.policy_version == 0
            assert "vLLM imported in" in bare.tail()
    finally:
        if active is not None:
            client.set(keys.ACTIVE_RUN, active)
        client.close()


def test_tasks_of_a_run_that_has_ended_are_dropped(generator: Generator, models: Models, save_ended_run) -> None:  # noqa: ANN001
    client = generator.client
    save_ended_run(client, "r-ended")
    try:
        before = client.xlen(keys.TO_VERIFY)
        task = _task("p-stale", models, version=0)
        task.run_id = "r-ended"
        entry_id = publish(client, keys.PROMPTS, task)
        deadline = time.monotonic() + 30
        while True:
            info = {g["name"]: g for g in client.xinfo_groups(keys.PROMPTS)}[keys.GENERATORS_GROUP.encode()]
            if not client.xpending(keys.PROMPTS, keys.GENERATORS_GROUP)["pending"] and (
                info["last-delivered-id"] == (entry_id if isinstance(entry_id, bytes) else str(entry_id).encode())
            ):
                break
            assert time.monotonic() < deadline, generator.tail()
            time.sleep(0.1)
        time.sleep(0.3)
        assert client.xlen(keys.TO_VERIFY) == before
        assert not client.sismember(keys.done_key("r-ended", "generate"), "p-stale")
        assert "no longer active" in generator.tail()
    finally:
        client.delete(keys.run_key("r-ended"))


def test_a_chat_task_for_a_model_without_a_chat_template_yields_an_empty_group(
    generator: Generator, models: Models
) -> None:
    client = generator.client
    _publish_together(
        client,
        _task("p-plain-chat", models, version=5, prompt_format=types_pb2.PROMPT_FORMAT_CHAT, path=models.plain),
        _task("p-plain-raw", models, version=5, prompt_format=types_pb2.PROMPT_FORMAT_RAW, path=models.plain),
    )
    groups = _groups_for(client, {"p-plain-chat", "p-plain-raw"}, timeout=240)  # loading it rebuilds the engine
    assert len(groups["p-plain-chat"].samples) == 0, generator.tail()
    assert groups["p-plain-chat"].policy_version == 5
    raw = groups["p-plain-raw"]
    assert len(raw.samples) == 2 and raw.policy_version == 5
    assert list(raw.prompt_token_ids) == AutoTokenizer.from_pretrained(models.plain)(PROMPT)["input_ids"]
    assert "no chat template" in generator.log_path.read_text(errors="replace")
    assert client.xpending(keys.PROMPTS, keys.GENERATORS_GROUP)["pending"] == 0
    status = generator.stub().Status(generator_pb2.GeneratorStatusRequest(), timeout=10)
    assert status.engine_ready and status.policy_version == 5


def test_asynchronous_tasks_are_served_by_any_loaded_version_the_trainer_accepts(
    generator: Generator, models: Models
) -> None:
    """sync.max_staleness: a task names the oldest version its step accepts; a loaded version of the run at or
    after it serves the task without a reload, an older one is replaced by the task's policy first."""
    client, stub = generator.client, generator.stub()
    stub.Reload(generator_pb2.ReloadRequest(run_id="r1", policy=types_pb2.PolicyRef(version=2, path=str(models.v2))),
                timeout=60)
    reloads = stub.Status(generator_pb2.GeneratorStatusRequest(), timeout=10).reloads

    behind = _task("async-1", models, version=0)  # released when v0 was the newest; step accepts v0 and later
    behind.oldest_policy.CopyFrom(types_pb2.PolicyRef(version=0, path=str(models.seed)))
    publish(client, keys.PROMPTS, behind)
    assert _groups_for(client, {"async-1"})["async-1"].policy_version == 2  # the loaded v2, no reload
    assert stub.Status(generator_pb2.GeneratorStatusRequest(), timeout=10).reloads == reloads

    stub.Reload(generator_pb2.ReloadRequest(run_id="r1", policy=types_pb2.PolicyRef(version=0, path=str(models.seed))),
                timeout=60)
    ahead = _task("async-2", models, version=2)
    ahead.oldest_policy.CopyFrom(types_pb2.PolicyRef(version=2, path=str(models.v2)))
    publish(client, keys.PROMPTS, ahead)
    assert _groups_for(client, {"async-2"})["async-2"].policy_version == 2  # v0 is too old for the step: reloaded
