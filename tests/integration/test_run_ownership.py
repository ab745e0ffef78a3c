"""A run owns its checkpoint directory, through the controller's REST API against a real redis-server: a
`checkpoint.subdir` that is another run's directory (queued, running or finished; the same, an ancestor or a
descendant), the store root or `runs` is a 422 naming checkpoint.subdir and queues nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from semirl.controller.controller import Controller
from semirl.controller.submission import SpecRejected, validate_spec
from semirl.core import keys
from semirl.core.checkpoint_store import staged_directory
from semirl.core.ownership import RUN_ID_FILE

SUBDIR_LOC = ["body", "checkpoint", "subdir"]


def spec_dict(files: dict[str, Path], subdir: str | None = None, name: str = "own") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "model": {"path": str(files["model"])},
        "data": {"train": {"path": str(files["train"])}},
        "train": {"steps": 2, "batch_prompts": 2},
    }
    if subdir is not None:
        spec["checkpoint"] = {"subdir": subdir}
    return spec


def submit(http: TestClient, files: dict[str, Path], subdir: str | None = None) -> Any:
    body = json.dumps(spec_dict(files, subdir))
    return http.post("/v1/runs", content=body, headers={"Content-Type": "application/json"})


def assert_refused(response: Any, redis_client: redis.Redis, queued_before: int, *fragments: str) -> None:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [d["loc"] for d in detail] == [SUBDIR_LOC]
    for fragment in fragments:
        assert fragment in detail[0]["msg"]
    assert redis_client.llen(keys.RUN_INDEX) == queued_before  # nothing stored, nothing queued


def test_a_fresh_subdir_is_accepted_and_marked_as_the_run_s(
    http: TestClient, files: dict[str, Path], redis_client: redis.Redis
) -> None:
    response = submit(http, files, "experiments/first")
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    assert (files["store"] / "experiments" / "first" / RUN_ID_FILE).read_text() == f"{run_id}\n"
    second = submit(http, files, "experiments/second")  # a sibling is its own directory
    assert second.status_code == 201, second.text
    defaults = [submit(http, files) for _ in range(2)]  # default directories, runs/<run_id>
    assert [r.status_code for r in defaults] == [201, 201]
    for response in defaults:
        run_id = response.json()["id"]
        assert (files["store"] / "runs" / run_id / RUN_ID_FILE).read_text() == f"{run_id}\n"


def test_the_subdir_of_an_active_run_is_refused(
    http: TestClient, files: dict[str, Path], redis_client: redis.Redis
) -> None:
    first = submit(http, files, "exp/a")
    assert first.status_code == 201
    first_id = first.json()["id"]
    assert http.get(f"/v1/runs/{first_id}").json()["state"] in ("queued", "running")
    for subdir in ("exp/a", "exp/a/", "exp/./a", "exp/a/b", "exp"):
        assert_refused(submit(http, files, subdir), redis_client, 1, first_id)


def test_the_subdir_of_a_finished_run_is_refused(
    http: TestClient, files: dict[str, Path], redis_client: redis.Redis
) -> None:
    first_id = submit(http, files, "done").json()["id"]
    assert http.post(f"/v1/runs/{first_id}/cancel").json()["state"] == "cancelled"
    assert_refused(submit(http, files, "done"), redis_client, 1, "'done'", first_id)
    default_id = submit(http, files).json()["id"]
    assert_refused(submit(http, files, f"runs/{default_id}"), redis_client, 2, default_id)


@pytest.mark.parametrize("subdir", [".", "runs", "runs/.", "x/../runs"])
def test_the_store_root_and_runs_are_refused(
    http: TestClient, files: dict[str, Path], redis_client: redis.Redis, subdir: str
) -> None:
    assert_refused(submit(http, files, subdir), redis_client, 0)


def test_a_directory_with_checkpoints_of_a_forgotten_run_is_refused(
    http: TestClient, files: dict[str, Path], redis_client: redis.Redis
) -> None:
    # Its record is gone (no marker either: written before markers existed), its checkpoints remain.
    with staged_directory(files["store"] / "legacy" / "final", {"run_id": "legacy-0001"}) as staging:
        (staging / "model.safetensors").write_bytes(b"weights")
    assert_refused(submit(http, files, "legacy"), redis_client, 0, "run legacy-0001")
    assert_refused(submit(http, files, "legacy/final/x"), redis_client, 0, "lies inside 'legacy'")


def test_creation_compares_with_every_run_record(controller: Controller, files: dict[str, Path],
                                                 redis_client: redis.Redis) -> None:
    """A record whose directory was deleted still owns it: the check under the scheduler's lock refuses it."""
    first = controller.submit(validate_spec(spec_dict(files, "gone"), files["store"]))
    (files["store"] / "gone" / RUN_ID_FILE).unlink()
    (files["store"] / "gone").rmdir()
    spec = validate_spec(spec_dict(files, "gone"), files["store"])  # nothing on the store says whose it was
    with pytest.raises(SpecRejected) as refused:
        controller.submit(spec)
    assert [e["loc"] for e in refused.value.errors] == [["checkpoint", "subdir"]]
    assert first.id in refused.value.errors[0]["msg"]
    assert redis_client.lrange(keys.RUN_INDEX, 0, -1) == [first.id.encode()]


def test_a_clash_found_only_at_creation_is_a_422_too(
    http: TestClient, files: dict[str, Path], redis_client: redis.Redis
) -> None:
    """The directory of a run whose record remains but whose files were deleted passes the store checks; the
    record check when the run is created refuses it, and the API answers 422 as for any other clash."""
    first_id = submit(http, files, "gone").json()["id"]
    (files["store"] / "gone" / RUN_ID_FILE).unlink()
    (files["store"] / "gone").rmdir()
    assert_refused(submit(http, files, "gone"), redis_client, 1, first_id)
