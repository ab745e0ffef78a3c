"""A run the trainer cannot start fails with its reason after MAX_ATTEMPTS starts, also when the trainer process
died in between (a multi-rank job exits whole when a rank fails, a pod is OOM-killed): the attempts live in Redis.
The trainer service runs against real Redis and a stand-in controller (gRPC)."""

from __future__ import annotations

import time
from pathlib import Path

import redis
from trainer_harness import StandInController, activate, controller_server, redis_url, running_trainer, wait_for

from semirl.core import keys
from semirl.spec import RunSpec
from semirl.trainer.attempts import MAX_ATTEMPTS, RunAttempts

RUN_ID = "start-0001"


def _spec(model: Path) -> RunSpec:
    return RunSpec.model_validate({
        "name": "start", "model": {"path": str(model)}, "data": {"train": {"path": "unused.jsonl"}},
        "sync": {"interval": 1}, "train": {"steps": 2, "batch_prompts": 2}, "checkpoint": {"subdir": "shared"},
    })


def _train_until_failed(client: redis.Redis, store: Path) -> tuple[StandInController, float]:
    model = store / "empty-model"  # a directory without config.json: the engine build fails at once, every time
    model.mkdir(parents=True, exist_ok=True)
    activate(client, RUN_ID, _spec(model), (store / "shared").resolve(), model)
    controller = StandInController(client)
    server = controller_server(controller)
    started = time.monotonic()
    try:
        with running_trainer(redis_url(client), store, server.port, "trainer-start") as service:
            wait_for(lambda: RUN_ID in service.finished, timeout=120, what="the trainer never failed the run")
            elapsed = time.monotonic() - started
            time.sleep(0.3)  # it must not pick the run up again
    finally:
        server.stop()
    return controller, elapsed


def test_a_run_that_cannot_start_fails_with_its_reason(tmp_path: Path, redis_client: redis.Redis) -> None:
    controller, _ = _train_until_failed(redis_client, tmp_path / "store")
    assert len(controller.fails) == 1 and controller.fails[0].run_id == RUN_ID
    error = controller.fails[0].error
    assert f"failed {MAX_ATTEMPTS} times in a row" in error and "empty-model" in error, error
    assert not redis_client.exists(keys.run_trainer_attempts_key(RUN_ID))  # the run is done with: no counter left


def test_attempts_of_processes_that_died_count(tmp_path: Path, redis_client: redis.Redis) -> None:
    """Three earlier trainer processes started the run and died without an `except` (os._exit after a lost rank):
    the next process fails the run at once, with the last recorded reason, instead of crash-looping on."""
    dead = RunAttempts(redis_client)
    for _ in range(MAX_ATTEMPTS):
        dead.begin(RUN_ID)
    dead.failed(RUN_ID, "RanksLost: start_run failed on a 2-rank job: PackageNotFoundError: accelerate>=1.1.0")
    controller, elapsed = _train_until_failed(redis_client, tmp_path / "store")
    assert len(controller.fails) == 1
    error = controller.fails[0].error
    assert f"started run {MAX_ATTEMPTS} times in a row without training a step" in error, error
    assert "PackageNotFoundError: accelerate" in error, error
    assert "empty-model" not in error  # no fourth engine build was tried


def test_a_trained_step_ends_the_streak_and_a_graceful_stop_does_not_count(redis_client: redis.Redis) -> None:
    attempts = RunAttempts(redis_client)
    assert [attempts.begin("r-1") for _ in range(2)] == [1, 2]
    attempts.trained("r-1")
    assert attempts.begin("r-1") == 1
    attempts.withdrawn("r-1")  # SIGTERM during the attempt
    assert not redis_client.exists(keys.run_trainer_attempts_key("r-1"))
    assert attempts.begin("r-1") == 1
    attempts.trained("r-1")
    assert attempts.failed("r-1", "OSError: disk full", after_a_step=True) == 1  # a failure after a step: a new streak
    assert attempts.begin("r-1") == 2 and attempts.last_error("r-1") == "OSError: disk full"
    assert not attempts.exhausted(MAX_ATTEMPTS) and attempts.exhausted(MAX_ATTEMPTS + 1)
    assert redis_client.ttl(keys.run_trainer_attempts_key("r-1")) > 0
