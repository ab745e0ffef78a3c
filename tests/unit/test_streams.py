"""Stream queue semantics against a real redis-server: ack-after-forward, reclaim, idempotent redelivery."""

from __future__ import annotations

import time

import redis

from semirl.core import keys
from semirl.core.streams import StreamQueue, backlog, publish
from semirl.proto import types_pb2

IN, OUT = "test:in", "test:out"


def _task(prompt_id: str) -> types_pb2.PromptTask:
    return types_pb2.PromptTask(run_id="r1", prompt_id=prompt_id, prompt="1+1=?")


def test_forward_acks_and_writes_downstream_once(redis_client: redis.Redis) -> None:
    queue = StreamQueue(redis_client, IN, "g", "c1", types_pb2.PromptTask)
    publish(redis_client, IN, _task("p1"))
    [delivery] = queue.read(block_ms=100)
    assert delivery.message.prompt_id == "p1"
    assert queue.pending_count() == 1

    out = types_pb2.SampleGroup(task=delivery.message, policy_version=3)
    assert queue.forward(delivery, OUT, out, done_set=keys.done_key("r1", "gen"), member="p1")
    assert queue.pending_count() == 0
    # The same prompt delivered again (e.g. redelivered after a crash) is acked but not written twice.
    publish(redis_client, IN, _task("p1"))
    [again] = queue.read(block_ms=100)
    assert not queue.forward(again, OUT, out, done_set=keys.done_key("r1", "gen"), member="p1")
    entries = redis_client.xrange(OUT)
    assert len(entries) == 1
    decoded = types_pb2.SampleGroup.FromString(entries[0][1][b"pb"])
    assert decoded.policy_version == 3 and decoded.task.prompt_id == "p1"
    assert queue.pending_count() == 0


def test_dead_consumer_entries_are_reclaimed_after_visibility_timeout(redis_client: redis.Redis) -> None:
    dead = StreamQueue(redis_client, IN, "g", "dead", types_pb2.PromptTask, visibility_timeout_s=0.3)
    for i in range(3):
        publish(redis_client, IN, _task(f"p{i}"))
    taken = dead.read(count=3, block_ms=100)
    assert len(taken) == 3  # "dead" never acks them

    alive = StreamQueue(redis_client, IN, "g", "alive", types_pb2.PromptTask, visibility_timeout_s=0.3)
    assert alive.read(count=10, block_ms=50) == []  # not idle long enough yet
    time.sleep(0.4)
    reclaimed = alive.read(count=10, block_ms=50)
    assert sorted(d.message.prompt_id for d in reclaimed) == ["p0", "p1", "p2"]
    alive.ack(d.entry_id for d in reclaimed)
    assert backlog(redis_client, IN, "g") == {"lag": 0, "pending": 0, "length": 3}
    publish(redis_client, IN, _task("p3"))
    assert backlog(redis_client, IN, "g")["lag"] == 1


def test_restarted_consumer_replays_its_own_pending_first(redis_client: redis.Redis) -> None:
    first = StreamQueue(redis_client, IN, "g", "trainer-0", types_pb2.PromptTask)
    publish(redis_client, IN, _task("a"))
    publish(redis_client, IN, _task("b"))
    assert len(first.read(count=2, block_ms=100)) == 2
    publish(redis_client, IN, _task("c"))

    restarted = StreamQueue(redis_client, IN, "g", "trainer-0", types_pb2.PromptTask)
    replayed = restarted.read(count=10, block_ms=100)
    assert [d.message.prompt_id for d in replayed] == ["a", "b"]
    fresh = restarted.read(count=10, block_ms=100)
    assert [d.message.prompt_id for d in fresh] == ["c"]


def test_undecodable_entry_is_dropped_not_crashing(redis_client: redis.Redis) -> None:
    queue = StreamQueue(redis_client, IN, "g", "c1", types_pb2.PromptTask)
    redis_client.xadd(IN, {b"pb": b"\xff\xff\xff not protobuf"})
    publish(redis_client, IN, _task("ok"))
    got = queue.read(count=10, block_ms=100)
    assert [d.message.prompt_id for d in got] == ["ok"]
