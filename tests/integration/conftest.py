"""Fixtures shared by the controller's integration tests: a seed model directory, datasets and a store on disk,
the Controller engine on the real Redis of tests/conftest.py, and its FastAPI app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from semirl.controller.app import create_app
from semirl.controller.controller import Controller


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    model = tmp_path / "seed"
    model.mkdir()
    (model / "config.json").write_text("{}")
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"problem": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(20)))
    evals = tmp_path / "eval.jsonl"
    evals.write_text("".join(json.dumps({"problem": f"{i}+2?", "answer": str(i + 2)}) + "\n" for i in range(5)))
    return {"model": model, "train": train, "eval": evals, "store": tmp_path / "store"}


@pytest.fixture
def controller(redis_client: redis.Redis, files: dict[str, Path]) -> Controller:
    return Controller(redis_client, files["store"])


@pytest.fixture
def http(controller: Controller) -> Iterator[TestClient]:
    with TestClient(create_app(controller)) as client:
        yield client
