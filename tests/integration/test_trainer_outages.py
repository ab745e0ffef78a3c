"""Passing outages never fail a run: a Redis crash loop and a controller that is down for a while.

Real processes: a redis-server with AOF that is SIGKILLed and restarted on the same port, a stand-in controller
(gRPC) that is stopped and started again on the same port, and the trainer service in this process with DeepSpeed.
The run must end with every step trained exactly once, by one engine (no failed attempt, no resume).
"""

from __future__ import annotations

import time
from pathlib import Path

import redis
from test_trainer_engine import _publish_step, tiny_model  # noqa: F401 - a fixture
from trainer_harness import StandInController, activate, controller_server, running_trainer, wait_for

from semirl.core import keys
from semirl.core.redis_server import EmbeddedRedis, free_port, start_redis
from semirl.core.streams import pending_count
from semirl.spec import RunSpec


def _crash_and_restart(server: EmbeddedRedis) -> EmbeddedRedis:
    server.process.kill()
    server.process.wait()
    time.sleep(1.0)
    return start_redis(server.data_dir, port=server.port, append_only=True)


def test_redis_crash_loop_and_controller_outage_end_in_a_succeeded_run(tiny_model: Path, tmp_path: Path) -> None:  # noqa: F811
    server = start_redis(tmp_path / "redis", append_only=True)
    client = redis.Redis(host="127.0.0.1", port=server.port)
    spec = RunSpec.model_validate({
        "name": "outages", "model": {"path": str(tiny_model)}, "data": {"train": {"path": "unused.jsonl"}},
        "sync": {"interval": 1}, "train": {"steps": 4, "batch_prompts": 2, "micro_batch_pairs": 2},
        "optim": {"lr": 1e-3},
    })
    run_id = "run-outages"
    store = tmp_path / "store"
    activate(client, run_id, spec, store / "runs" / run_id, tiny_model)
    client.config_set("appendfsync", "always")  # what was written before a crash survives it
    controller = StandInController(client)
    controller_port = free_port()
    grpc_server = controller_server(controller, controller_port)

    def committed(version: int) -> bool:
        return any(c.policy.version == version for c in controller.commits)

    try:
        with running_trainer(f"redis://127.0.0.1:{server.port}/0", store, controller_port, "trainer-o") as service:
            _publish_step(client, run_id, spec, 1)
            wait_for(lambda: committed(1))
            for _ in range(3):  # a crash loop while the trainer waits for step 2
                server = _crash_and_restart(server)
                time.sleep(1.5)
            _publish_step(client, run_id, spec, 2)
            wait_for(lambda: committed(2))

            grpc_server.stop()  # the controller goes away; step 3 trains and its report has nowhere to go
            _publish_step(client, run_id, spec, 3)
            time.sleep(12)
            assert not committed(3)
            grpc_server = controller_server(controller, controller_port)
            _publish_step(client, run_id, spec, 4)
            wait_for(lambda: any(c.final for c in controller.commits), timeout=180)
    finally:
        grpc_server.stop()
        server.stop()
        server = start_redis(server.data_dir, port=server.port, append_only=True)  # to read what was left

    try:
        assert [r.step for r in controller.reports] == [1, 2, 3, 4]  # one engine, no step retrained
        assert [r.resumed_from_step for r in controller.reports] == [0, 0, 0, 0]
        assert [c.policy.version for c in controller.commits] == [1, 2, 3, 4]
        assert controller.fails == []
        assert service.metrics.run_errors._value.get() == 0
        assert pending_count(redis.Redis(host="127.0.0.1", port=server.port), keys.SCORED, keys.TRAINER_GROUP) == 0
    finally:
        server.stop()
