"""How a resumed sweep decides between following a run and submitting it again, against the controller's real REST
app (FastAPI's TestClient) on the real Redis of tests/conftest.py: only a run that is gone, failed or cancelled is
submitted again, and a controller that does not answer stops the sweep instead."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from semirl.client import ControllerClient
from semirl.core.redis_server import free_port
from semirl.sweep.runner import _resumable, _submitted_by_name


def rest_client(http: TestClient) -> ControllerClient:
    client = ControllerClient("http://testserver")
    client.http = http
    return client


def test_a_noted_or_named_run_is_followed_and_only_a_gone_or_cancelled_one_is_submitted_again(
        http: TestClient, files: dict[str, Path]) -> None:
    client = rest_client(http)
    name = "sweep-a1b2c3-000-online-seed0"
    spec = {"name": name, "model": {"path": str(files["model"])}, "data": {"train": {"path": str(files["train"])}},
            "sync": {"interval": 2}, "train": {"steps": 4, "batch_prompts": 2}}
    run_id = client.submit_spec(spec)["id"]

    assert _resumable(client, run_id) == run_id
    assert _resumable(client, None) is None
    assert _resumable(client, "gone-00000000") is None
    # Stopped after submitting but before noting the id: the run is found by its name.
    assert _submitted_by_name(client, name) == run_id
    assert _submitted_by_name(client, "sweep-a1b2c3-001-other-seed0") is None

    client.cancel(run_id)
    assert _resumable(client, run_id) is None
    assert _submitted_by_name(client, name) is None


def test_a_controller_that_does_not_answer_stops_the_sweep_rather_than_submitting_twice() -> None:
    client = ControllerClient(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    with pytest.raises(httpx.ConnectError):
        _resumable(client, "online-00000000")
