"""The reward-model service as a real process over real Redis and gRPC, with a real (tiny, random) HF sequence
classifier: its scores are the engine's, every group is forwarded once, and a killed service's pending groups
are taken over and scored once by another."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis
from reward_fixtures import build_model_dir  # tests/reward_fixtures.py
from service_process import running_service

from semirl.core import keys
from semirl.core.grpc_server import channel
from semirl.core.redis_server import EmbeddedRedis
from semirl.core.streams import PAYLOAD_FIELD, publish
from semirl.proto import reward_pb2, reward_pb2_grpc, types_pb2
from semirl.reward.engine import RewardEngine, RewardEngineConfig

PROMPT = "What is 12+30?"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("rm"))


def _group(prompt_id: str, texts: list[str], purpose: int = types_pb2.TASK_PURPOSE_TRAIN) -> types_pb2.SampleGroup:
    task = types_pb2.PromptTask(run_id="r1", prompt_id=prompt_id, purpose=purpose, prompt=PROMPT,
                                reward_source=types_pb2.REWARD_SOURCE_REWARD_MODEL)
    return types_pb2.SampleGroup(task=task, samples=[types_pb2.Sample(text=t, token_ids=[1, 2]) for t in texts],
                                 policy_version=3, generator_id="g0")


def _scored(client: redis.Redis, stream: str) -> dict[str, list[types_pb2.ScoredGroup]]:
    out: dict[str, list[types_pb2.ScoredGroup]] = {}
    for _id, fields in client.xrange(stream):
        scored = types_pb2.ScoredGroup.FromString(fields[PAYLOAD_FIELD])
        out.setdefault(scored.group.task.prompt_id, []).append(scored)
    return out


def _wait(predicate, timeout: float = 60.0, what: str = "") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_groups_are_scored_by_the_model_once_and_the_rpc_agrees(
    redis_server: EmbeddedRedis, redis_client: redis.Redis, model_dir: Path, tmp_path: Path
) -> None:
    texts = ["\\boxed{42}", "It is 42, since 12+30=42.", "", "x" * 3000]
    args = ["--reward-id", "rm-a", "--model", str(model_dir), "--max-length", "64"]
    with running_service("reward", redis_server.url, tmp_path, args, start_timeout_s=120) as service:
        publish(redis_client, keys.TO_REWARD, _group("t1-0", texts))
        publish(redis_client, keys.TO_REWARD, _group("e0-chat-0", texts[:2], purpose=types_pb2.TASK_PURPOSE_EVAL))
        publish(redis_client, keys.TO_REWARD, _group("t1-0", texts))  # a redelivered copy: scored once
        _wait(lambda: redis_client.xlen(keys.SCORED) >= 1 and redis_client.xlen(keys.EVAL_SCORED) >= 1,
              what=service.tail())
        time.sleep(1.0)
        train, evals = _scored(redis_client, keys.SCORED), _scored(redis_client, keys.EVAL_SCORED)
        assert list(train) == ["t1-0"] and len(train["t1-0"]) == 1 and list(evals) == ["e0-chat-0"]
        direct = RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu", max_length=64))
        expected = [r.score for r in direct.score([(PROMPT, t) for t in texts])]
        assert list(train["t1-0"][0].rewards) == pytest.approx(expected, abs=1e-5)
        assert train["t1-0"][0].scorer_id == "rm-a"
        assert len(set(expected)) == len(expected)  # the model tells these responses apart
        stub = reward_pb2_grpc.RewardServiceStub(channel(service.target))
        response = stub.Score(reward_pb2.ScoreRequest(prompt=PROMPT, responses=texts), timeout=60)
        assert list(response.scores) == pytest.approx(expected, abs=1e-5)
        assert list(response.truncated) == [False, False, False, True]  # the 3,000-character one is cut
        assert redis_client.smembers(keys.done_key("r1", "reward")) == {b"t1-0", b"e0-chat-0"}


def test_a_killed_services_pending_groups_are_taken_over_and_scored_once(
    redis_server: EmbeddedRedis, redis_client: redis.Redis, model_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL after it read but before it forwarded: the entries stay pending under the dead consumer; a second
    service takes them over once the first one's registration is gone, and each prompt is scored exactly once."""
    args = ["--model", str(model_dir)]
    with running_service("reward", redis_server.url, tmp_path, ["--reward-id", "rm-dead", *args],
                         start_timeout_s=120) as dead:
        dead.process.send_signal(signal.SIGSTOP)  # frozen: it cannot forward what it reads next
        redis_client.xgroup_createconsumer(keys.TO_REWARD, keys.REWARDS_GROUP, "rm-dead")
        for index in range(6):
            publish(redis_client, keys.TO_REWARD, _group(f"t1-{index}", ["a", "bb", "ccc"]))
        # Hand the entries to the frozen consumer, as its own read would have.
        redis_client.xreadgroup(keys.REWARDS_GROUP, "rm-dead", {keys.TO_REWARD: ">"}, count=6)
        assert redis_client.xpending(keys.TO_REWARD, keys.REWARDS_GROUP)["pending"] == 6
        dead.process.kill()
        dead.process.wait()
        dead.process.returncode = 0  # killed on purpose: the fixture's clean-exit check does not apply
        redis_client.delete(keys.service_registration_key("reward", "rm-dead"))  # its registration's TTL, run out
        (tmp_path / "b").mkdir()
        with running_service("reward", redis_server.url, tmp_path / "b", ["--reward-id", "rm-live", *args],
                             start_timeout_s=120) as live:
            _wait(lambda: len(_scored(redis_client, keys.SCORED)) == 6, what=live.tail())
            time.sleep(1.0)
            scored = _scored(redis_client, keys.SCORED)
            assert all(len(copies) == 1 and copies[0].scorer_id == "rm-live" for copies in scored.values())
            _wait(lambda: redis_client.xpending(keys.TO_REWARD, keys.REWARDS_GROUP)["pending"] == 0,
                  what="left pending")
