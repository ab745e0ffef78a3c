"""Stream queue semantics against a real redis-server: ack-after-forward, reclaim, idempotent redelivery."""

from __future__ import annotations

import time

import redis

from semirl.core import keys
from semirl.core.streams import StreamQueue, backlog, publish, trim_consumed
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


def test_entries_of_a_consumer_whose_registration_expired_are_taken_over_at_once(redis_client: redis.Redis) -> None:
    registration = keys.service_registration_key("generator", "gen-old")
    redis_client.set(registration, "10.0.0.1:50051", px=1500)  # its pod refreshes this until it dies
    old = StreamQueue(redis_client, IN, "g", "gen-old", types_pb2.PromptTask, owner_service="generator")
    for i in range(3):
        publish(redis_client, IN, _task(f"p{i}"))
    assert len(old.read(count=2, block_ms=100)) == 2  # then the pod is killed: no ack, no refresh

    new = StreamQueue(redis_client, IN, "g", "gen-new", types_pb2.PromptTask, owner_service="generator")
    # The visibility timeout (60 s) is far off, and while the old registration lives its entries stay put.
    [fresh] = new.read(count=10, block_ms=50)
    assert fresh.message.prompt_id == "p2"
    new.ack([fresh.entry_id])
    assert new.read(count=10, block_ms=50) == []
    time.sleep(1.6)  # the registration expires
    new._next_orphan_check = 0.0  # checked every 2 s; do not wait for the next check
    taken = new.read(count=10, block_ms=50)
    assert sorted(d.message.prompt_id for d in taken) == ["p0", "p1"]
    new.ack(d.entry_id for d in taken)
    # A live but unregistered consumer of a group without an owner service is never touched.
    plain = StreamQueue(redis_client, OUT, "h", "a", types_pb2.PromptTask)
    publish(redis_client, OUT, _task("q"))
    assert len(plain.read(count=1, block_ms=50)) == 1
    other = StreamQueue(redis_client, OUT, "h", "b", types_pb2.PromptTask)
    assert other.read(count=1, block_ms=50) == []


def test_trim_keeps_unread_pending_and_recent_entries(redis_client: redis.Redis) -> None:
    queue = StreamQueue(redis_client, IN, "g", "c1", types_pb2.PromptTask)
    for i in range(6):
        publish(redis_client, IN, _task(f"p{i}"))
    first = queue.read(count=4, block_ms=50)
    queue.ack(d.entry_id for d in first[:1] + first[2:])  # p1 stays pending; p4, p5 unread
    assert trim_consumed(redis_client, IN, retention_s=3600) == 0  # all younger than the retention
    assert trim_consumed(redis_client, IN, retention_s=0) == 1  # only p0: p1 is pending
    assert redis_client.xrange(IN)[0][0].decode() == first[1].entry_id
    queue.ack([first[1].entry_id])
    assert trim_consumed(redis_client, IN, retention_s=0) == 3  # p1..p3; p4 and p5 were never read
    assert [d.message.prompt_id for d in queue.read(count=10, block_ms=50)] == ["p4", "p5"]
    assert trim_consumed(redis_client, "test:none", retention_s=0) == 0
