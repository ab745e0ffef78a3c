"""Redis memory stays bounded over many runs: consumed stream entries are trimmed and a finished run's
idempotency sets expire (docs/architecture.md, decision 31).

Real redis-server and the real Controller; the generator, verifier and trainer stages are played by real
StreamQueues doing what those services do with their entries (forward once, ack), without models, because
what is measured here is Redis, not generation.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis

from semirl.controller.controller import Controller
from semirl.core import keys
from semirl.core.streams import StreamQueue
from semirl.proto import types_pb2
from semirl.spec import parse_run_spec

RUNS = 12
PROMPTS_PER_RUN = 8  # 2 steps x 4 prompts: one window at sync interval 2
SAMPLES, TOKENS = 8, 256  # what a generator's group of a short math answer weighs


def _run_through_the_pipeline(client: redis.Redis, run_id: str) -> int:
    """Move every released prompt of the run through generate -> verify -> train; the bytes forwarded."""
    generator = StreamQueue(client, keys.PROMPTS, keys.GENERATORS_GROUP, "gen-0", types_pb2.PromptTask)
    verifier = StreamQueue(client, keys.TO_VERIFY, keys.VERIFIERS_GROUP, "ver-0", types_pb2.SampleGroup)
    trainer = StreamQueue(client, keys.SCORED, keys.TRAINER_GROUP, "trainer", types_pb2.ScoredGroup, reclaim=False)
    forwarded = 0
    for delivery in generator.read(count=100, block_ms=100):
        task = delivery.message
        group = types_pb2.SampleGroup(task=task, samples=[
            types_pb2.Sample(text="x" * 400, token_ids=list(range(TOKENS))) for _ in range(SAMPLES)])
        generator.forward(delivery, keys.TO_VERIFY, group, done_set=keys.done_key(run_id, "generate"),
                          member=task.prompt_id)
        forwarded += group.ByteSize()
    for delivery in verifier.read(count=100, block_ms=100):
        scored = types_pb2.ScoredGroup(group=delivery.message, rewards=[1.0] * SAMPLES)
        verifier.forward(delivery, keys.SCORED, scored, done_set=keys.done_key(run_id, "verify"),
                         member=delivery.message.task.prompt_id)
        forwarded += scored.ByteSize()
    taken = trainer.read(count=100, block_ms=100)
    trainer.ack(d.entry_id for d in taken)
    assert len(taken) == PROMPTS_PER_RUN
    return forwarded


def test_streams_and_idempotency_sets_do_not_grow_with_runs(
    redis_client: redis.Redis, files: dict[str, Path]
) -> None:
    controller = Controller(redis_client, files["store"], stream_retention_s=0, trim_every_s=0)
    spec = parse_run_spec({"name": "many", "model": {"path": str(files["model"])},
                           "data": {"train": {"path": str(files["train"])}}, "sync": {"interval": 2},
                           "train": {"steps": 2, "batch_prompts": PROMPTS_PER_RUN // 2}}, check_paths=True)
    used: list[int] = []
    forwarded = 0
    run_ids = []
    for _ in range(RUNS):
        run_id = controller.submit(spec).id
        run_ids.append(run_id)
        controller.tick()
        forwarded += _run_through_the_pipeline(redis_client, run_id)
        controller.cancel(run_id)
        controller.tick()  # trims
        assert {stream: redis_client.xlen(stream) for stream in keys.STREAM_GROUPS} == dict.fromkeys(
            keys.STREAM_GROUPS, 0)
        assert all(0 < redis_client.ttl(keys.done_key(run_id, stage)) <= 1 for stage in ("generate", "verify"))
        used.append(int(redis_client.info("memory")["used_memory"]))

    time.sleep(1.2)  # the idempotency sets' retention (stream_retention_s = 0 keeps them 1 s)
    assert not list(redis_client.scan_iter(match=keys.done_key("*", "*")))
    # What stays per finished run is its record (spec, counters) and no per-prompt state.
    assert sorted(k.decode() for k in redis_client.scan_iter(match=f"{keys.PREFIX}:run:{run_ids[-1]}*")) == [
        keys.run_key(run_ids[-1])]
    growth_per_run = (used[-1] - used[2]) / (RUNS - 3)
    per_run_traffic = forwarded / RUNS
    assert per_run_traffic > 50_000  # what an untrimmed Redis would keep of every run
    assert growth_per_run < per_run_traffic / 10, (growth_per_run, per_run_traffic)
