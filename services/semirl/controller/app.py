"""The controller's public REST API (FastAPI): a thin layer over the Controller engine."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from semirl.core.runstate import RunRecord

from .registry import SpecRejected, decode_body, validate_spec
from .scheduler import Controller

SPEC_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "object"}},
        "application/yaml": {"schema": {"type": "object"}},
        "text/yaml": {"schema": {"type": "object"}},
    },
    "description": "A RunSpec as JSON or YAML (chosen by Content-Type).",
}


def create_app(controller: Controller) -> FastAPI:
    app = FastAPI(
        title="semirl controller",
        version="0.1.0",
        description="Submit and follow semi-online RL runs (DPO). Runs execute one at a time, in order.",
    )

    def found(run_id: str) -> RunRecord:
        record = controller.registry.get(run_id)
        if record is None:
            raise HTTPException(status_code=404, detail=f"unknown run {run_id}")
        return record

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        controller.client.ping()
        return {"status": "ok"}

    @app.post("/v1/runs", status_code=201, openapi_extra={"requestBody": SPEC_BODY})
    async def submit(request: Request) -> Any:
        body = await request.body()
        try:
            data = decode_body(body, request.headers.get("content-type"))
            spec = await run_in_threadpool(validate_spec, data, controller.registry.store)
        except SpecRejected as rejected:
            detail = [{**e, "loc": ["body", *e["loc"]]} for e in rejected.errors]
            return JSONResponse(status_code=422, content={"detail": detail})
        record = await run_in_threadpool(controller.submit, spec)
        return JSONResponse(status_code=201, content={"id": record.id, "state": record.state})

    @app.get("/v1/runs")
    def list_runs() -> dict[str, list[dict[str, Any]]]:
        return {"runs": [
            {"id": r.id, "name": r.name, "state": r.state, "step": r.step, "policy_version": r.policy_version,
             "created_at": r.created_at}
            for r in controller.registry.runs()
        ]}

    @app.get("/v1/runs/{run_id}")
    def get_run(run_id: str) -> dict[str, Any]:
        return controller.view(found(run_id))

    @app.get("/v1/runs/{run_id}/metrics")
    def get_metrics(run_id: str) -> list[dict[str, Any]]:
        found(run_id)
        return controller.registry.metrics(run_id)

    @app.post("/v1/runs/{run_id}/cancel")
    def cancel(run_id: str) -> dict[str, Any]:
        found(run_id)
        record = controller.cancel(run_id)
        assert record is not None
        return {"id": record.id, "state": record.state}

    return app
