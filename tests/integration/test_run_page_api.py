"""What the run page reads, against a real redis-server: incremental metric reads (`?since=N`), the weight-sync
history (`GET /v1/runs/{id}/syncs`, with how each Reload fan-out went) and the pages themselves, served outside the
OpenAPI schema and open with an API token set. The page in a browser: tests/e2e/test_run_page.py."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from test_scheduler import (  # noqa: F401 - a sibling module; generator is a fixture
    FrozenGenerator,
    generator,
    make_spec,
    write_policy,
)
from trainer_harness import wait_for

from semirl.controller.app import create_app
from semirl.controller.controller import Controller
from semirl.core import keys
from semirl.core.grpc_server import ServiceServer
from semirl.proto import controller_pb2, generator_pb2_grpc
from semirl.spec import MAX_STEPS


@contextlib.contextmanager
def serving(servicer: FrozenGenerator) -> Iterator[int]:
    """A generator's gRPC server on a free port; its port."""
    server = ServiceServer("127.0.0.1:0", "semirl.v1.GeneratorService")
    server.add(generator_pb2_grpc.add_GeneratorServiceServicer_to_server, servicer)
    server.start()
    try:
        yield server.port
    finally:
        servicer.thaw.set()
        server.stop(0)


def start(controller: Controller, files: dict[str, Path], name: str, **options: Any) -> str:
    run_id = controller.submit(make_spec(files, name, **options)).id
    controller.schedule()
    return run_id


def commit(controller: Controller, files: dict[str, Path], run_id: str, version: int, final: bool = False) -> None:
    ok, error = controller.commit(run_id, version, str(write_policy(files["store"], run_id, version, final=final)),
                                  final)
    assert ok, error


def syncs_with_reloads(http: TestClient, run_id: str, count: int) -> list[dict[str, Any]]:
    """The run's syncs once all `count` have their fan-out outcome."""
    wait_for(lambda: [s["reload"] is not None for s in http.get(f"/v1/runs/{run_id}/syncs").json()] == [True] * count,
             timeout=20, what="fan-out outcomes not stored")
    return http.get(f"/v1/runs/{run_id}/syncs").json()


def test_metrics_since_returns_only_the_steps_after_the_first_n(
    http: TestClient, controller: Controller, files: dict[str, Path]
) -> None:
    run_id = start(controller, files, "since", interval=2, steps=4)
    for step in (1, 2, 3):
        controller.report_step(controller_pb2.StepReport(run_id=run_id, step=step, metrics={"loss": float(step)}))
    url = f"/v1/runs/{run_id}/metrics"
    assert [m["step"] for m in http.get(url).json()] == [1, 2, 3]
    assert [m["step"] for m in http.get(url, params={"since": 0}).json()] == [1, 2, 3]
    assert [(m["step"], m["loss"]) for m in http.get(url, params={"since": 2}).json()] == [(3, 3.0)]
    assert http.get(url, params={"since": 3}).json() == []
    assert http.get(url, params={"since": MAX_STEPS}).json() == []
    for bad in (-1, MAX_STEPS + 1, "x"):
        assert http.get(url, params={"since": bad}).status_code == 422
    assert http.get("/v1/runs/nope-00000000/metrics", params={"since": 1}).status_code == 404
    # A resumed trainer's replay of step 2 replaces steps 2 and 3: a client reading from its last entry sees it.
    controller.report_step(controller_pb2.StepReport(run_id=run_id, step=2, metrics={"loss": 20.0}))
    assert [(m["step"], m["loss"]) for m in http.get(url, params={"since": 1}).json()] == [(2, 20.0)]


@pytest.mark.usefixtures("generator")  # gen-live reloads; gen-dead is registered where nothing listens
def test_each_sync_is_stored_with_its_versions_window_and_fan_out(
    http: TestClient, controller: Controller, files: dict[str, Path], redis_client: redis.Redis
) -> None:
    run_id = start(controller, files, "synced", interval=2, steps=6)
    assert http.get(f"/v1/runs/{run_id}/syncs").json() == []
    controller.report_step(controller_pb2.StepReport(run_id=run_id, step=2, metrics={"loss": 1.0}))
    commit(controller, files, run_id, 2)
    commit(controller, files, run_id, 4)
    syncs = syncs_with_reloads(http, run_id, 2)
    assert [{k: s[k] for k in ("sync", "policy_version", "previous_version", "trainer_step", "window")}
            for s in syncs] == [
        {"sync": 1, "policy_version": 2, "previous_version": 0, "trainer_step": 2, "window": 1},
        {"sync": 2, "policy_version": 4, "previous_version": 2, "trainer_step": 2, "window": 2}]
    assert syncs[0]["at"] <= syncs[1]["at"]
    for sync in syncs:
        reload = sync["reload"]
        assert (reload["generators"], reload["ok"], reload["load_seconds"]) == (2, 1, pytest.approx(0.01))
        assert [failure.split(":")[0] for failure in reload["failed"]] == ["gen-dead"]
    assert http.get(f"/v1/runs/{run_id}/syncs", params={"since": 1}).json() == syncs[1:]
    assert http.get(f"/v1/runs/{run_id}").json()["syncs"] == len(syncs)
    # The final commit is no sync (the final evaluation loads it); the history is kept with the run's record.
    commit(controller, files, run_id, 6, final=True)
    assert http.get(f"/v1/runs/{run_id}").json()["state"] == "succeeded"
    assert redis_client.llen(keys.run_syncs_key(run_id)) == 2 and redis_client.ttl(keys.run_syncs_key(run_id)) == -1


def test_an_asynchronous_run_stores_every_synced_commit(
    http: TestClient, controller: Controller, files: dict[str, Path]
) -> None:
    """No generator registered: the fan-out asked none (the pub/sub notice still went), and says so."""
    run_id = start(controller, files, "async", interval=1, steps=4, sync={"interval": 1, "max_staleness": 1})
    for version in (1, 2, 3):
        commit(controller, files, run_id, version)
    syncs = syncs_with_reloads(http, run_id, 3)
    assert [(s["policy_version"], s["previous_version"], s["window"]) for s in syncs] == [
        (1, 0, None), (2, 1, None), (3, 2, None)]
    assert {(s["reload"]["generators"], s["reload"]["ok"], s["reload"]["load_seconds"]) for s in syncs} == {
        (0, 0, None)}


@pytest.mark.usefixtures("generator")
def test_a_sync_replaced_before_its_fan_out_ended_keeps_no_outcome(
    http: TestClient, controller: Controller, files: dict[str, Path], redis_client: redis.Redis
) -> None:
    """A generator stuck in its Reload: the newer syncs replace the older ones' fan-outs, whose outcome stays null;
    the newest one's is stored once the stuck generator answers."""
    frozen = FrozenGenerator()
    with serving(frozen) as port:
        redis_client.set(keys.service_registration_key("generator", "gen-frozen"), f"127.0.0.1:{port}")
        run_id = start(controller, files, "replaced", interval=1, steps=4, sync={"interval": 1, "max_staleness": 1})
        for version in (1, 2, 3):
            commit(controller, files, run_id, version)
        assert [s["reload"] for s in http.get(f"/v1/runs/{run_id}/syncs").json()] == [None] * 3
        frozen.thaw.set()
        wait_for(lambda: http.get(f"/v1/runs/{run_id}/syncs").json()[-1]["reload"] is not None, timeout=20)
    *replaced, newest = http.get(f"/v1/runs/{run_id}/syncs").json()
    assert [s["reload"] for s in replaced] == [None, None]
    assert (newest["reload"]["generators"], newest["reload"]["ok"]) == (3, 2)


def test_syncs_of_an_unknown_run_are_404_and_documented(http: TestClient) -> None:
    assert http.get("/v1/runs/nope-00000000/syncs").status_code == 404
    assert http.get("/v1/runs/x:eval/syncs").status_code == 404
    operation = http.get("/openapi.json").json()["paths"]["/v1/runs/{run_id}/syncs"]["get"]
    assert {"200", "404", "422"} <= set(operation["responses"])
    listed = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert (listed["type"], listed["items"]) == ("array", {"$ref": "#/components/schemas/WeightSync"})
    since = next(p for p in operation["parameters"] if p["name"] == "since")
    assert since["in"] == "query" and since["schema"]["minimum"] == 0 and since["description"]


@pytest.mark.parametrize("api_token", [None, "s3cret"], ids=["open", "token"])
def test_the_pages_are_served_open_and_outside_the_schema(
    controller: Controller, files: dict[str, Path], api_token: str | None
) -> None:
    with TestClient(create_app(controller, api_token=api_token)) as http:
        run_id = start(controller, files, "paged", interval=2, steps=4)
        # Assets relative to each route, so both pages also work behind a proxy's path prefix.
        for path, assets in (("/", "static/"), (f"/runs/{run_id}", "../static/")):
            page = http.get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert 'id="run-page"' in page.text and f'src="{assets}pages.js"' in page.text
            assert "{assets}" not in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
        for asset, kind in (("plot.js", "javascript"), ("pages.js", "javascript"), ("semirl.css", "text/css")):
            response = http.get(f"/static/{asset}")
            assert response.status_code == 200 and kind in response.headers["content-type"]
        # What the page reads is open with the token set.
        for read in ("/v1/runs", f"/v1/runs/{run_id}", f"/v1/runs/{run_id}/metrics?since=0",
                     f"/v1/runs/{run_id}/syncs?since=0"):
            assert http.get(read).status_code == 200, read
        assert http.get("/runs/x:eval").status_code == 404
        paths = http.get("/openapi.json").json()["paths"]
        assert not {"/", "/runs/{run_id}"} & set(paths) and not any(p.startswith("/static") for p in paths)
