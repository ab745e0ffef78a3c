"""The verifier as a real process over real Redis and gRPC, with real math-verify."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from service_process import ServiceProcess, running_service

from semirl.core import keys
from semirl.core.grpc_server import channel
from semirl.core.redis_server import EmbeddedRedis
from semirl.core.streams import PAYLOAD_FIELD, publish
from semirl.proto import types_pb2, verifier_pb2, verifier_pb2_grpc

PATHOLOGICAL = "\\boxed{9^{9^{9^{9^{9}}}}}"
PAPER_FORMAT = "The final answer is $\\frac{1}{2}$. I hope it is correct."


@dataclass
class Verifier(ServiceProcess):
    client: redis.Redis


@pytest.fixture(scope="module")
def verifier(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Verifier]:
    client = redis_server.client()
    client.flushall()
    args = ["--verifier-id", "ver-test", "--timeout-s", "2"]
    with running_service("verifier", redis_server.url, tmp_path_factory.mktemp("verifier"), args) as process:
        yield Verifier(**vars(process), client=client)
    client.close()


def _group(prompt_id: str, gold: str, texts: list[str], purpose: int = types_pb2.TASK_PURPOSE_TRAIN,
           run_id: str = "r1", answer_format: int = types_pb2.ANSWER_FORMAT_UNSPECIFIED) -> types_pb2.SampleGroup:
    task = types_pb2.PromptTask(run_id=run_id, prompt_id=prompt_id, purpose=purpose, prompt="Q?", gold_answer=gold,
                                reward_source=types_pb2.REWARD_SOURCE_VERIFIER, answer_format=answer_format)
    return types_pb2.SampleGroup(
        task=task, samples=[types_pb2.Sample(text=t, token_ids=[1, 2], logprobs=[-0.1, -0.2]) for t in texts],
        policy_version=3, generator_id="g0",
    )


def _read(client: redis.Redis, stream: str) -> list[types_pb2.ScoredGroup]:
    out = []
    for _id, fields in client.xrange(stream):
        scored = types_pb2.ScoredGroup()
        scored.ParseFromString(fields[PAYLOAD_FIELD])
        out.append(scored)
    return out


def _wait_len(client: redis.Redis, stream: str, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while client.xlen(stream) < n:
        assert time.monotonic() < deadline, f"{stream} has {client.xlen(stream)} entries, wanted {n}"
        time.sleep(0.05)


def test_verify_rpc(verifier: Verifier) -> None:
    stub = verifier_pb2_grpc.VerifierServiceStub(channel(verifier.target))
    request = verifier_pb2.VerifyRequest(items=[
        verifier_pb2.VerifyItem(response="\\boxed{\\frac12}", gold_answer="0.5"),
        verifier_pb2.VerifyItem(response="\\boxed{3}", gold_answer="4"),
        verifier_pb2.VerifyItem(response="no answer", gold_answer="4"),
        verifier_pb2.VerifyItem(response=PATHOLOGICAL, gold_answer="1"),
        verifier_pb2.VerifyItem(response="\\boxed{7}", gold_answer="7"),
        verifier_pb2.VerifyItem(response=PAPER_FORMAT, gold_answer="0.5"),  # items are read as LATEX
    ])
    response = stub.Verify(request, timeout=60)
    assert list(response.rewards) == [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]


def test_train_and_eval_groups_are_scored_once(verifier: Verifier) -> None:
    client = verifier.client
    train = _group("p-1", "42", ["so \\boxed{42}", "\\boxed{41}", "forty-two", "\\boxed{42.0}"])
    publish(client, keys.TO_VERIFY, train)
    publish(client, keys.TO_VERIFY, _group("e-1", "\\frac{1}{2}", ["\\boxed{0.5}", "\\boxed{2}"],
                                           purpose=types_pb2.TASK_PURPOSE_EVAL))
    _wait_len(client, keys.SCORED, 1)
    _wait_len(client, keys.EVAL_SCORED, 1)
    publish(client, keys.TO_VERIFY, train)  # a redelivery of the same prompt
    publish(client, keys.TO_VERIFY, _group("p-2", "5", ["\\boxed{5}", PATHOLOGICAL]))
    _wait_len(client, keys.SCORED, 2)
    last_id = client.xrevrange(keys.TO_VERIFY, count=1)[0][0]
    deadline = time.monotonic() + 15
    while (client.xpending(keys.TO_VERIFY, keys.VERIFIERS_GROUP)["pending"]
           or client.xinfo_groups(keys.TO_VERIFY)[0]["last-delivered-id"] != last_id):
        assert time.monotonic() < deadline, verifier.tail()
        time.sleep(0.05)
    scored = _read(client, keys.SCORED)
    assert [s.group.task.prompt_id for s in scored] == ["p-1", "p-2"]  # p-1 written once
    assert list(scored[0].rewards) == [1.0, 0.0, 0.0, 1.0]
    assert list(scored[1].rewards) == [1.0, 0.0]
    assert scored[0].scorer_id == "ver-test"
    assert scored[0].group.policy_version == 3 and len(scored[0].group.samples) == 4
    evals = _read(client, keys.EVAL_SCORED)
    assert len(evals) == 1 and list(evals[0].rewards) == [1.0, 0.0]
    assert client.smembers(keys.done_key("r1", "verify")) == {b"p-1", b"p-2", b"e-1"}


def _wait_consumed(verifier: Verifier, timeout: float = 15.0) -> None:
    client = verifier.client
    last_id = client.xrevrange(keys.TO_VERIFY, count=1)[0][0]
    deadline = time.monotonic() + timeout
    while (client.xpending(keys.TO_VERIFY, keys.VERIFIERS_GROUP)["pending"]
           or client.xinfo_groups(keys.TO_VERIFY)[0]["last-delivered-id"] != last_id):
        assert time.monotonic() < deadline, verifier.tail()
        time.sleep(0.05)


def test_an_empty_group_is_scored_with_no_rewards(verifier: Verifier) -> None:
    client = verifier.client
    before = client.xlen(keys.SCORED)
    publish(client, keys.TO_VERIFY, _group("p-empty", "3", []))  # a task the generator gave up on
    _wait_len(client, keys.SCORED, before + 1)
    scored = _read(client, keys.SCORED)[-1]
    assert scored.group.task.prompt_id == "p-empty"
    assert list(scored.rewards) == [] and len(scored.group.samples) == 0
    assert verifier.process.poll() is None


def test_groups_of_a_run_that_has_ended_are_dropped(verifier: Verifier, save_ended_run) -> None:  # noqa: ANN001
    client = verifier.client
    save_ended_run(client, "r-old")
    try:
        before = client.xlen(keys.SCORED)
        publish(client, keys.TO_VERIFY, _group("p-stale", "5", ["\\boxed{5}"], run_id="r-old"))
        _wait_consumed(verifier)
        time.sleep(0.3)
        assert client.xlen(keys.SCORED) == before
        assert not client.sismember(keys.done_key("r-old", "verify"), "p-stale")
        assert "no longer active" in verifier.tail()
    finally:
        client.delete(keys.run_key("r-old"))


def test_each_task_is_scored_in_its_answer_format(verifier: Verifier) -> None:
    client = verifier.client
    before = client.xlen(keys.SCORED)
    texts = [PAPER_FORMAT, "so \\boxed{0.5}", "$\\frac{1}{3}$"]
    formats = {"fmt-latex": types_pb2.ANSWER_FORMAT_LATEX, "fmt-boxed": types_pb2.ANSWER_FORMAT_BOXED,
               "fmt-unspecified": types_pb2.ANSWER_FORMAT_UNSPECIFIED}
    for prompt_id, answer_format in formats.items():
        publish(client, keys.TO_VERIFY, _group(prompt_id, "\\frac{1}{2}", texts, answer_format=answer_format))
    _wait_len(client, keys.SCORED, before + len(formats))
    rewards = {s.group.task.prompt_id: list(s.rewards) for s in _read(client, keys.SCORED)[before:]}
    assert rewards == {"fmt-latex": [1.0, 1.0, 0.0], "fmt-boxed": [0.0, 1.0, 0.0], "fmt-unspecified": [1.0, 1.0, 0.0]}


def test_one_read_is_scored_as_one_batch_around_a_timeout_and_poison_entries(verifier: Verifier) -> None:
    """Everything below reaches the verifier in one read (one transaction): a group with an item that overruns the
    timeout, an undecodable entry, a malformed group, a copy of a group, groups of both answer formats."""
    client = verifier.client
    before = client.xlen(keys.SCORED)
    timeouts_before = verifier.log_path.read_text(errors="replace").count("exceeded")
    good = _group("b-good", "42", ["\\boxed{42}", "\\boxed{41}", PAPER_FORMAT, "The final answer is $42$."])
    groups = [
        good,
        _group("b-hang", "5", ["\\boxed{5}", PATHOLOGICAL, "\\boxed{6}", "\\boxed{5.0}"]),
        _group("b-malformed", "1", ["\\boxed{1}"], run_id=""),
        good,
        _group("b-boxed", "\\frac{1}{2}", [PAPER_FORMAT, "so \\boxed{0.5}"],
               answer_format=types_pb2.ANSWER_FORMAT_BOXED),
        _group("b-empty", "3", []),
    ]
    with client.pipeline(transaction=True) as pipe:
        for group in groups[:2]:
            pipe.xadd(keys.TO_VERIFY, {PAYLOAD_FIELD: group.SerializeToString()})
        pipe.xadd(keys.TO_VERIFY, {PAYLOAD_FIELD: b"\xff\xfe not a SampleGroup"})
        for group in groups[2:]:
            pipe.xadd(keys.TO_VERIFY, {PAYLOAD_FIELD: group.SerializeToString()})
        pipe.execute()
    _wait_len(client, keys.SCORED, before + 4)
    _wait_consumed(verifier)
    rewards = {s.group.task.prompt_id: list(s.rewards) for s in _read(client, keys.SCORED)[before:]}
    assert rewards == {"b-good": [1.0, 0.0, 0.0, 1.0], "b-hang": [1.0, 0.0, 0.0, 1.0],
                       "b-boxed": [0.0, 1.0], "b-empty": []}
    assert client.xlen(keys.SCORED) == before + 4  # the copy of b-good was not written again
    assert verifier.log_path.read_text(errors="replace").count("exceeded") == timeouts_before + 1
    assert verifier.process.poll() is None
