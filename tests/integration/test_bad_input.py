"""No input makes the controller answer 5xx: huge, deeply nested, many-error or odd-path bodies, odd run ids, and
dataset rows nested too deeply. Real Redis and the real FastAPI app."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from test_controller_api import post_json, spec_dict, with_change

from semirl.controller.app import MAX_BODY_BYTES, MAX_ERRORS
from semirl.core import keys
from semirl.data.problems import load_problems
from semirl.spec import DatasetSpec


def test_a_body_over_the_limit_is_413_and_queues_nothing(http: TestClient, redis_client: redis.Redis) -> None:
    huge = b"name: x\n" + b"#" * (MAX_BODY_BYTES + 1)
    response = http.post("/v1/runs", content=huge, headers={"Content-Type": "application/yaml"})
    assert response.status_code == 413
    assert redis_client.llen(keys.RUN_INDEX) == 0


@pytest.mark.parametrize("media", ["application/json", "application/yaml"])
def test_deep_nesting_is_a_422_not_a_recursion_error(http: TestClient, media: str) -> None:
    for depth in (40, 5000):  # past the limit, and past Python's recursion limit
        body = "[" * depth + "]" * depth if media == "application/json" else "a: " + "[" * depth + "]" * depth
        response = http.post("/v1/runs", content=body, headers={"Content-Type": media})
        assert response.status_code == 422, (depth, response.text[:200])
        detail = response.json()["detail"]
        assert detail[0]["loc"] == ["body"]
    nested = {"name": "x", "extra": json.loads("[" * 40 + "]" * 40)}
    assert post_json(http, nested).status_code == 422


def test_a_422_lists_a_bounded_number_of_errors(http: TestClient) -> None:
    body = {f"unknown_{i}": "x" * 300 for i in range(3000)}  # 3,000 errors echoing 300 characters each
    assert len(json.dumps(body)) < MAX_BODY_BYTES
    response = post_json(http, body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert len(detail) == MAX_ERRORS + 1 and detail[-1]["type"] == "too_many_errors"
    assert len(response.content) < 200_000


def test_paths_the_os_refuses_are_validation_errors(http: TestClient, files: dict[str, Path]) -> None:
    for bad in ("a" * 300, "x/" + "b" * 1000 + "/model", "nul\x00byte"):
        for field in ("model.path", "data.train.path", "checkpoint.subdir"):
            response = post_json(http, with_change(spec_dict(files), field, bad))
            assert response.status_code == 422, (field, bad[:20], response.text[:300])
            assert response.json()["detail"][0]["loc"] == ["body", *field.split(".")]


@pytest.mark.parametrize("run_id", ["x:eval", "a:b:c", "..", "-x"])
def test_run_ids_that_address_other_keys_are_unknown(http: TestClient, redis_client: redis.Redis,
                                                    run_id: str) -> None:
    redis_client.sadd(keys.run_key(run_id), "not a record")  # a key of the wrong type where a lookup would go
    for response in (http.get(f"/v1/runs/{run_id}"), http.get(f"/v1/runs/{run_id}/metrics"),
                     http.post(f"/v1/runs/{run_id}/cancel")):
        assert response.status_code == 404, response.text


def test_parsing_happens_off_the_event_loop(http: TestClient) -> None:
    """A large body is parsed in a worker thread: health checks keep answering meanwhile."""
    body = ("name: x\nmodel: {path: m}\ndata: {train: {path: t}}\ntrain: {steps: 1}\nfiller:\n"
            + "".join(f"  k{i}: [1, 2, 3]\n" for i in range(40_000)))[:MAX_BODY_BYTES]
    started = time.monotonic()
    assert http.get("/healthz").status_code == 200
    assert http.post("/v1/runs", content=body, headers={"Content-Type": "application/yaml"}).status_code == 422
    assert time.monotonic() - started < 60


def test_a_dataset_row_nested_too_deeply_is_an_error_naming_the_row(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    deep = "[" * 100_000 + "]" * 100_000
    path.write_text(json.dumps({"problem": "1+1", "answer": "2"}) + "\n" + '{"problem": ' + deep + ', "answer": 1}\n')
    with pytest.raises(ValueError, match=r"rows.jsonl:2: "):
        load_problems(DatasetSpec(path=str(path)))
