"""The controller's REST API against a real redis-server: validation (422 naming the field, nothing queued),
JSON and YAML bodies, 404s, the queue order, cancel, metrics, evaluation results per set and the OpenAPI docs."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from fastapi.testclient import TestClient

from semirl.controller.app import create_app
from semirl.controller.controller import Controller
from semirl.core import keys
from semirl.core.streams import PAYLOAD_FIELD, publish
from semirl.proto import controller_pb2, types_pb2


def spec_dict(files: dict[str, Path], name: str = "api") -> dict[str, Any]:
    return {
        "name": name,
        "model": {"path": str(files["model"])},
        "data": {"train": {"path": str(files["train"])}, "eval": {"path": str(files["eval"]), "limit": 3}},
        "sync": {"interval": 2},
        "train": {"steps": 4, "batch_prompts": 2},
    }


def post_json(http: TestClient, body: dict[str, Any]) -> Any:
    return http.post("/v1/runs", content=json.dumps(body), headers={"Content-Type": "application/json"})


def with_change(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return body


BAD_SPECS = [
    ("train.steps", "abc", ["body", "train", "steps"]),
    ("algorithm", "ppo", ["body", "algorithm"]),
    ("sync.interval", 0, ["body", "sync", "interval"]),
    ("train.batch_prompts", -4, ["body", "train", "batch_prompts"]),
    ("model.path", "/nonexistent/model", ["body", "model", "path"]),
    ("name", "..", ["body", "name"]),
    ("name", "a..b", ["body", "name"]),
    ("checkpoint.subdir", "../../etc", ["body", "checkpoint", "subdir"]),
    ("data.train.path", "/nonexistent/train.jsonl", ["body", "data", "train", "path"]),
]


@pytest.mark.parametrize("field,value,loc", BAD_SPECS, ids=[f"{f}={v}" for f, v, _ in BAD_SPECS])
def test_bad_spec_is_422_naming_the_field_and_queues_nothing(
    http: TestClient, redis_client: redis.Redis, files: dict[str, Path], field: str, value: Any, loc: list[str]
) -> None:
    response = post_json(http, with_change(spec_dict(files), field, value))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail
    assert any(d["loc"][: len(loc)] == loc for d in detail), detail
    assert all({"loc", "msg", "type"} <= set(d) for d in detail)
    assert redis_client.llen(keys.RUN_INDEX) == 0 and redis_client.llen(keys.RUN_QUEUE) == 0
    assert redis_client.get(keys.ACTIVE_RUN) is None
    assert redis_client.xlen(keys.PROMPTS) == 0
    assert not files["store"].exists() or not any(files["store"].rglob("*"))


def test_a_bad_preference_row_is_422_naming_the_row_and_field(
    http: TestClient, redis_client: redis.Redis, files: dict[str, Path], tmp_path: Path
) -> None:
    """Offline DPO on a static preference set: every row is read at submission; nothing is queued on a bad one."""
    prefs = tmp_path / "prefs.jsonl"
    good = {"prompt": "1+1?", "chosen": "2", "rejected": "3"}
    prefs.write_text("".join(json.dumps(row) + "\n" for row in [good, good, {"prompt": "2+2?", "chosen": "4"}]))
    body = {**spec_dict(files), "data": {"train": {"path": str(prefs), "format": "preferences"}},
            "sync": {"interval": "offline"}}
    response = post_json(http, body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "data", "train", "path"]
    assert "row 3: missing field 'rejected'" in error["msg"]
    assert redis_client.llen(keys.RUN_QUEUE) == 0
    prefs.write_text(json.dumps(good) + "\n")
    response = post_json(http, body)
    assert response.status_code == 201, response.text


NON_FINITE = [
    ("optim.lr", "lr", ["body", "optim", "lr"]),
    ("dpo.beta", "beta", ["body", "dpo", "beta"]),
    ("sampling.temperature", "temperature", ["body", "sampling", "temperature"]),
    ("eval.temperature", "temperature", ["body", "eval", "temperature"]),
    ("optim.betas", "betas", ["body", "optim", "betas", 1]),
]


@pytest.mark.parametrize("content_type", ["application/json", "application/yaml"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("field,leaf,loc", NON_FINITE, ids=[f for f, _, _ in NON_FINITE])
def test_non_finite_numbers_are_422_naming_the_field_and_queue_nothing(
    http: TestClient, redis_client: redis.Redis, files: dict[str, Path], field: str, leaf: str, loc: list,
    value: float, content_type: str,
) -> None:
    body = with_change(spec_dict(files), field, [0.9, value] if leaf == "betas" else value)
    # JSON as Python writes it (Infinity, NaN) and YAML as the fuzzer sent it (.inf, .nan).
    text = json.dumps(body) if content_type == "application/json" else yaml.safe_dump(body)
    response = http.post("/v1/runs", content=text, headers={"Content-Type": content_type})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(d["loc"] == loc for d in detail), detail
    assert redis_client.llen(keys.RUN_INDEX) == 0 and redis_client.llen(keys.RUN_QUEUE) == 0
    assert not redis_client.keys(keys.run_key("*"))
    assert http.get("/v1/runs").status_code == 200 and http.get("/v1/runs").json() == {"runs": []}


@pytest.mark.parametrize("field,value", [
    ("train.steps", 10_000_001), ("train.batch_prompts", 100_001), ("sampling.max_tokens", 2**20 + 1),
    ("checkpoint.keep", 10**12), ("eval.every", 10**12), ("optim.warmup_steps", 10**12),
])
def test_sizes_beyond_their_bounds_are_422(
    http: TestClient, redis_client: redis.Redis, files: dict[str, Path], field: str, value: int
) -> None:
    response = post_json(http, with_change(spec_dict(files), field, value))
    assert response.status_code == 422, response.text
    assert any(d["loc"] == ["body", *field.split(".")] for d in response.json()["detail"])
    assert redis_client.llen(keys.RUN_INDEX) == 0


def test_unparsable_bodies_are_422(http: TestClient, redis_client: redis.Redis) -> None:
    bad_json = http.post("/v1/runs", content="{not json", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 422 and bad_json.json()["detail"][0]["loc"] == ["body"]
    scalar = http.post("/v1/runs", content="- a\n- b\n", headers={"Content-Type": "application/yaml"})
    assert scalar.status_code == 422
    not_utf8 = http.post("/v1/runs", content=b"name: \xff\xfe", headers={"Content-Type": "application/yaml"})
    assert not_utf8.status_code == 422
    assert redis_client.llen(keys.RUN_INDEX) == 0


def test_dataset_rows_that_are_not_objects_are_422(
    http: TestClient, files: dict[str, Path], redis_client: redis.Redis
) -> None:
    files["train"].write_text('{"problem": "1+1?", "answer": "2"}\n[1, 2]\n')
    response = post_json(http, spec_dict(files))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:4] == ["body", "data", "train", "path"]
    assert "JSON object" in response.json()["detail"][0]["msg"]
    assert redis_client.llen(keys.RUN_INDEX) == 0


@pytest.mark.parametrize("content_type", ["application/yaml", "text/yaml", "application/json"])
def test_yaml_and_json_are_accepted(http: TestClient, files: dict[str, Path], content_type: str) -> None:
    body = spec_dict(files)
    text = json.dumps(body) if content_type == "application/json" else yaml.safe_dump(body)
    response = http.post("/v1/runs", content=text, headers={"Content-Type": content_type})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"].startswith("api-") and len(created["id"]) == len("api-") + 8
    assert created["state"] == "queued"  # the loop starts it: no window is built in the request
    record = http.get(f"/v1/runs/{created['id']}").json()
    assert record["spec"]["sync"]["interval"] == 2
    assert record["run_dir"] == str((files["store"] / "runs" / created["id"]).resolve())


def test_relative_paths_are_resolved(
    http: TestClient, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(files["model"].parent)
    body = spec_dict(files)
    body["model"]["path"] = "seed"
    body["data"]["train"]["path"] = "train.jsonl"
    created = post_json(http, body).json()
    spec = http.get(f"/v1/runs/{created['id']}").json()["spec"]
    assert spec["model"]["path"] == str(files["model"].resolve())
    assert spec["data"]["train"]["path"] == str(files["train"].resolve())


def test_unknown_run_is_404(http: TestClient) -> None:
    assert http.get("/v1/runs/nope-00000000").status_code == 404
    assert http.get("/v1/runs/nope-00000000/metrics").status_code == 404
    assert http.post("/v1/runs/nope-00000000/cancel").status_code == 404


def test_queued_runs_wait_in_order(
    http: TestClient, controller: Controller, files: dict[str, Path], redis_client: redis.Redis
) -> None:
    ids = [post_json(http, spec_dict(files, f"q{i}")).json()["id"] for i in range(3)]
    controller.schedule()
    states = {i: http.get(f"/v1/runs/{i}").json() for i in ids}
    assert [states[i]["state"] for i in ids] == ["running", "queued", "queued"]
    assert [states[i].get("queue_position") for i in ids[1:]] == [0, 1]
    assert redis_client.get(keys.ACTIVE_RUN).decode() == ids[0]
    listed = http.get("/v1/runs").json()["runs"]
    assert [r["id"] for r in listed] == ids

    assert http.post(f"/v1/runs/{ids[0]}/cancel").json()["state"] == "cancelled"
    controller.schedule()
    assert http.get(f"/v1/runs/{ids[1]}").json()["state"] == "running"
    assert http.get(f"/v1/runs/{ids[2]}").json()["state"] == "queued"
    # Cancelling a queued run takes it out of the queue; the running one is untouched.
    assert http.post(f"/v1/runs/{ids[2]}/cancel").json()["state"] == "cancelled"
    assert redis_client.llen(keys.RUN_QUEUE) == 0
    assert http.get(f"/v1/runs/{ids[1]}").json()["state"] == "running"


def test_run_view_metrics_and_cancel_via_report(
    http: TestClient, files: dict[str, Path], controller: Controller, redis_client: redis.Redis
) -> None:
    run_id = post_json(http, spec_dict(files)).json()["id"]
    controller.schedule()  # the loop's next round starts it
    report = controller_pb2.StepReport(
        run_id=run_id, step=1, metrics={"loss": 0.5, "reward_mean": 0.25},
        groups=[controller_pb2.GroupUse(prompt_id="t1-0", policy_version=0, trained=True),
                controller_pb2.GroupUse(prompt_id="t1-1", policy_version=0, trained=False, skip_reason="all_same")],
    )
    assert controller.report_step(report) is False
    view = http.get(f"/v1/runs/{run_id}").json()
    assert view["step"] == 1 and view["policy_version"] == 0 and view["generation_version"] == 0
    assert isinstance(view["latest_metrics"].pop("time"), float)
    assert view["latest_metrics"] == {"step": 1, "loss": 0.5, "reward_mean": 0.25}
    assert view["counters"] == {"groups_trained": 1, "groups_skipped": 1}
    assert set(view["queues"]) == {"prompts", "to_verify", "to_reward", "scored", "eval_scored"}
    # window 0 (2 steps x 2 prompts) + the seed's eval round (3 prompts), none delivered yet
    assert view["queues"]["prompts"]["length"] == 2 * 2 + 3 and view["queues"]["prompts"]["pending"] == 0
    assert view["generators"] == {}
    redis_client.set(keys.service_registration_key("generator", "gen-a"), "127.0.0.1:1")
    assert http.get(f"/v1/runs/{run_id}").json()["generators"] == {"gen-a": "127.0.0.1:1"}
    series = http.get(f"/v1/runs/{run_id}/metrics").json()
    without_time = [{k: v for k, v in m.items() if k != "time"} for m in series]
    assert without_time == [{"step": 1, "loss": 0.5, "reward_mean": 0.25}]
    assert len(redis_client.lrange(keys.run_steps_key(run_id), 0, -1)) == 1
    # A resumed trainer replays step 1: its report replaces the first one instead of being counted twice.
    assert controller.report_step(report) is False
    assert len(http.get(f"/v1/runs/{run_id}/metrics").json()) == 1
    assert http.get(f"/v1/runs/{run_id}").json()["counters"] == {"groups_trained": 1, "groups_skipped": 1}

    assert http.post(f"/v1/runs/{run_id}/cancel").json()["state"] == "cancelled"
    assert controller.report_step(controller_pb2.StepReport(run_id=run_id, step=2)) is True
    assert http.get(f"/v1/runs/{run_id}").json()["state"] == "cancelled"


def test_health_and_docs(http: TestClient) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/docs").status_code == 200
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/v1/runs", "/v1/runs/{run_id}", "/v1/runs/{run_id}/metrics", "/v1/runs/{run_id}/cancel"} <= set(paths)


def test_readiness_follows_the_scheduler_loop(http: TestClient, controller: Controller) -> None:
    not_ready = http.get("/readyz")
    assert not_ready.status_code == 503 and "scheduler loop not running" in not_ready.json()["problems"]
    controller.start()
    try:
        assert http.get("/readyz").json() == {"status": "ready"}
    finally:
        controller.stop()


def test_services_view_counts_registered_replicas(http: TestClient, redis_client: redis.Redis) -> None:
    redis_client.set(keys.service_registration_key("generator", "gen-a"), "127.0.0.1:1")
    redis_client.set(keys.service_registration_key("generator", "gen-b"), "127.0.0.1:2")
    redis_client.set(keys.service_registration_key("verifier", "ver-a"), "127.0.0.1:3")
    view = http.get("/v1/services").json()
    assert view["discovery"] == "redis"
    assert view["generators"] == {"gen-a": "127.0.0.1:1", "gen-b": "127.0.0.1:2"}
    assert view["replicas"]["generator"] == {"ready": 2, "total": 2}
    assert view["replicas"]["verifier"] == {"ready": 1, "total": 1}
    assert view["replicas"]["trainer"] == {"ready": 0, "total": 0}


def test_mutating_endpoints_need_the_api_token(
    controller: Controller, files: dict[str, Path], redis_client: redis.Redis
) -> None:
    with TestClient(create_app(controller, api_token="s3cret")) as http:
        body = json.dumps(spec_dict(files))
        headers = {"Content-Type": "application/json"}
        missing = http.post("/v1/runs", content=body, headers=headers)
        wrong = http.post("/v1/runs", content=body, headers={**headers, "Authorization": "Bearer nope"})
        assert missing.status_code == wrong.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert redis_client.llen(keys.RUN_QUEUE) == 0  # nothing queued by a refused request
        created = http.post("/v1/runs", content=body, headers={**headers, "Authorization": "Bearer s3cret"})
        assert created.status_code == 201
        run_id = created.json()["id"]
        assert http.get(f"/v1/runs/{run_id}").status_code == 200  # reads stay open
        assert http.post(f"/v1/runs/{run_id}/cancel").status_code == 401
        cancelled = http.post(f"/v1/runs/{run_id}/cancel", headers={"Authorization": "Bearer s3cret"})
        assert cancelled.json()["state"] == "cancelled"


def test_run_view_shows_each_eval_set_per_step(
    http: TestClient, files: dict[str, Path], controller: Controller, redis_client: redis.Redis
) -> None:
    body = spec_dict(files)
    body["data"]["eval"] = [{"path": str(files["eval"]), "limit": 3, "name": "math"},
                            {"path": str(files["eval"]), "limit": 2, "name": "small", "samples_per_prompt": 3}]
    run_id = post_json(http, body).json()["id"]
    controller.schedule()
    released = [types_pb2.PromptTask.FromString(f[PAYLOAD_FIELD]) for _id, f in redis_client.xrange(keys.PROMPTS)]
    for task in (t for t in released if t.purpose == types_pb2.TASK_PURPOSE_EVAL):
        n = task.sampling.n
        # "math": every sample correct but prompt 0's generation failed (an empty group); "small": one in three.
        samples = 0 if task.prompt_id == "e0-math-0" else n
        rewards = [1.0] * samples if task.eval_set == "math" else [1.0] + [0.0] * (n - 1)
        group = types_pb2.SampleGroup(task=task, samples=[types_pb2.Sample(token_ids=[5, 6])] * samples)
        publish(redis_client, keys.EVAL_SCORED, types_pb2.ScoredGroup(group=group, rewards=rewards))
    controller.tick()
    evals = http.get(f"/v1/runs/{run_id}").json()["evals"]
    assert [(e["step"], e["eval_set"]) for e in evals] == [(0, "math"), (0, "small")]
    math_set, small = evals
    assert math_set["accuracy"] == pytest.approx(2 / 3) and math_set["stderr"] == pytest.approx(1 / 3)
    assert {k: math_set[k] for k in ("prompts", "samples_per_prompt", "samples_expected", "samples_scored",
                                     "failed_prompts", "policy_version")} == {
        "prompts": 3, "samples_per_prompt": 4, "samples_expected": 12, "samples_scored": 8, "failed_prompts": 1,
        "policy_version": 0}
    assert small["accuracy"] == pytest.approx(1 / 3) and small["stderr"] == pytest.approx(0.0)
    assert (small["prompts"], small["samples_expected"], small["failed_prompts"]) == (2, 6, 0)


def test_openapi_documents_the_run_view_and_every_status_code(http: TestClient) -> None:
    schema = http.get("/openapi.json").json()
    paths = schema["paths"]
    codes = {(method, path): set(op["responses"]) for path, ops in paths.items() for method, op in ops.items()}
    assert {"201", "413", "422"} <= codes[("post", "/v1/runs")]  # 401 only with a token: test_openapi_conformance
    assert {"200", "404"} <= codes[("get", "/v1/runs/{run_id}")]
    assert {"200", "404"} <= codes[("get", "/v1/runs/{run_id}/metrics")]
    assert {"200", "404"} <= codes[("post", "/v1/runs/{run_id}/cancel")]
    assert {"200", "503"} <= codes[("get", "/readyz")]
    ok = paths["/v1/runs/{run_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/RunView"}
    models = schema["components"]["schemas"]
    assert {"evals", "state", "spec", "queues", "replicas", "latest_metrics"} <= set(models["RunView"]["properties"])
    fields = models["EvalResult"]["properties"]
    assert {"eval_set", "accuracy", "stderr", "prompts", "samples_expected", "samples_scored",
            "failed_prompts"} <= set(fields)
    assert "per-prompt mean accuracy" in fields["stderr"]["description"]


def test_an_unreadable_run_record_breaks_no_other_run(
    http: TestClient, files: dict[str, Path], controller: Controller, redis_client: redis.Redis
) -> None:
    """The fuzzing finding: one stored record that no longer loads made listing, cancel and every tick fail."""
    broken = post_json(http, spec_dict(files, "broken")).json()["id"]
    queued = post_json(http, spec_dict(files, "queued")).json()["id"]
    redis_client.set(keys.run_key(broken), b"{garbage")

    listed = http.get("/v1/runs")
    assert listed.status_code == 200
    runs = {r["id"]: r for r in listed.json()["runs"]}
    assert list(runs) == [broken, queued]
    assert runs[broken]["state"] == "failed" and runs[broken]["name"] == "broken"
    assert "unreadable" in runs[broken]["error"] and runs[queued]["state"] == "queued"

    view = http.get(f"/v1/runs/{broken}")
    assert view.status_code == 409 and "failed" in view.json()["detail"]
    assert http.get(f"/v1/runs/{broken}/metrics").json() == []
    cancelled = http.post(f"/v1/runs/{broken}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "failed"

    # The scheduler has moved on: the queued run runs, and a new run is queued behind it and starts in turn.
    controller.tick()
    assert http.get(f"/v1/runs/{queued}").json()["state"] == "running"
    fresh = post_json(http, spec_dict(files, "fresh"))
    assert fresh.status_code == 201 and fresh.json()["state"] == "queued"
    assert http.post(f"/v1/runs/{queued}/cancel").json()["state"] == "cancelled"
    controller.schedule()
    assert http.get(f"/v1/runs/{fresh.json()['id']}").json()["state"] == "running"
    assert [r["state"] for r in http.get("/v1/runs").json()["runs"]] == ["failed", "cancelled", "running"]


def test_an_unreadable_active_record_does_not_stop_a_new_run(
    http: TestClient, controller: Controller, files: dict[str, Path], redis_client: redis.Redis
) -> None:
    broken = post_json(http, spec_dict(files, "broken")).json()["id"]
    controller.schedule()
    assert redis_client.get(keys.ACTIVE_RUN).decode() == broken
    record = json.loads(redis_client.get(keys.run_key(broken)))
    record["spec"]["optim"]["lr"] = None  # what pydantic stored for lr = inf before it was rejected
    redis_client.set(keys.run_key(broken), json.dumps(record))
    created = post_json(http, spec_dict(files, "after"))
    assert created.status_code == 201 and created.json()["state"] == "queued"
    controller.schedule()
    assert redis_client.get(keys.ACTIVE_RUN).decode() == created.json()["id"]


def test_readiness_reports_a_scheduler_whose_ticks_keep_failing(
    http: TestClient, controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller.poll_s, controller.retry_s = 0.01, 0.01
    failing = True
    real_tick = controller.tick

    def tick(block_ms: int = 0) -> None:
        if failing:
            raise RuntimeError("tick exploded")
        real_tick(block_ms)

    monkeypatch.setattr(controller, "tick", tick)
    controller.start()
    try:
        response = _wait_for_readiness(http, 503)
        problems = response.json()["problems"]
        assert any("ticks failing" in p and "tick exploded" in p for p in problems), problems
        failing = False
        assert _wait_for_readiness(http, 200).json() == {"status": "ready"}
    finally:
        controller.stop()


def _wait_for_readiness(http: TestClient, status: int) -> Any:
    deadline = time.monotonic() + 10
    response = http.get("/readyz")
    while response.status_code != status and time.monotonic() < deadline:
        time.sleep(0.02)
        response = http.get("/readyz")
    assert response.status_code == status, response.text
    return response
