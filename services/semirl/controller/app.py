"""The controller's public REST API (FastAPI): a thin layer over the Controller engine.

With an API token configured (SEMIRL_API_TOKEN; the chart fills it from a Secret), the mutating endpoints
(submit, cancel) need `Authorization: Bearer <token>`; reads stay open inside the cluster's NetworkPolicy.

A run whose stored record does not load is listed as failed with the reason in `error`; its own view answers
409 and cancelling it answers its state, failed. It never makes the list or any other run answer 500.

`/` lists the runs and `/runs/{id}` follows one in a browser (static/; docs/architecture.md, decision 45).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match, Route

from semirl.core import keys
from semirl.core.runstate import RunRecord, RunRecordUnreadable
from semirl.spec import MAX_STEPS, RunSpec

from .controller import Controller
from .submission import SpecRejected, decode_body, validate_spec
from .views import Health, NotReady, Problem, RunList, RunStatus, RunView, ServicesView, SpecErrors, WeightSync

# The demo's spec (examples/tiny-math-dpo.yaml) cut to what a spec needs; paths are the controller's.
RUN_SPEC_EXAMPLE = {
    "name": "tiny-math-dpo",
    "model": {"path": ".semirl/tiny/model"},
    "data": {"train": {"path": ".semirl/tiny/data/train.jsonl"}},
    "sync": {"interval": 4},
    "train": {"steps": 60, "batch_prompts": 32},
}
SPEC_BODY = {
    "required": True,
    "content": {media: {"schema": {"$ref": "#/components/schemas/RunSpec"}, "example": RUN_SPEC_EXAMPLE}
                for media in ("application/json", "application/yaml")},
    "description": "A RunSpec as JSON or YAML (chosen by Content-Type; text/yaml and any other type is read as YAML). "
                   "Paths must exist on the controller, and a spec is also checked across fields (e.g. eval.every "
                   "against sync.interval): 422 otherwise.",
}
UNKNOWN_RUN = {404: {"model": Problem, "description": "No run has this id."}}
NEEDS_TOKEN = {401: {"model": Problem, "description": "The request lacks the API token or has another one."}}
UNREADABLE_RUN = {409: {"model": Problem,
                        "description": "The run's stored record does not load; the run counts as failed."}}
BAD_SPEC = {422: {"model": SpecErrors, "description": "The spec is invalid: `detail` lists {loc, msg, type}, loc "
                  "naming the field (at most 50 errors, each message at most 500 characters)."}}
TOO_LARGE = {413: {"model": Problem,
                   "description": "The body is larger than the limit (1 MiB; a run spec is a few KB)."}}
MAX_BODY_BYTES = 1 << 20
MAX_ERRORS = 50
MAX_ERROR_CHARS = 500
RUN_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$")  # what RunStore.create makes: <name>-<hex>
STATIC = Path(__file__).with_name("static")
ASSETS_PLACEHOLDER = "{assets}"  # in index.html: where its CSS and scripts are, relative to the page's route
# The pages load only their own scripts and styles and read only this origin's API.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                "connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def since_query(what: str) -> Any:
    return Query(ge=0, le=MAX_STEPS, description=f"Skip the first `since` {what}: a client following a run asks "
                 f"only for what it has not seen (0, the default: all).")


class BodyTooLarge(Exception):  # noqa: N818
    pass


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused (BodyTooLarge) as soon as it passes `limit` bytes, whatever Content-Length says."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def bounded_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most MAX_ERRORS errors of at most MAX_ERROR_CHARS each: a 422 never grows with the body."""
    shown = [{**e, "loc": ["body", *e["loc"]], "msg": str(e["msg"])[:MAX_ERROR_CHARS]} for e in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        shown.append({"loc": ["body"], "msg": f"{len(errors) - MAX_ERRORS} more errors not shown",
                      "type": "too_many_errors"})
    return shown


def bearer_token_guard(token: str) -> Callable[..., None]:
    """A FastAPI dependency that accepts the request only with `token`."""
    scheme = HTTPBearer(auto_error=False, description="The controller's API token (mutating endpoints only).")

    def guard(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong API token (Authorization: Bearer …)",
                                headers={"WWW-Authenticate": "Bearer"})

    return guard


def create_app(controller: Controller, *, api_token: str | None = None) -> FastAPI:
    # Without a token nothing is checked, so the schema declares no security and no 401 either.
    guarded: dict[str, Any] = {"dependencies": [Depends(bearer_token_guard(api_token))]} if api_token else {}
    needs_token = NEEDS_TOKEN if api_token else {}
    app = FastAPI(
        title="semirl controller",
        version="0.1.0",
        description="Submit and follow semi-online RL runs (DPO). Runs execute one at a time, in order.",
        exception_handlers={405: method_not_allowed},
    )

    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus RunSpec as validation reads it: the body of POST /v1/runs (SPEC_BODY)."""
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            spec = RunSpec.model_json_schema(ref_template="#/components/schemas/{model}")
            schema["components"]["schemas"].update({**spec.pop("$defs"), "RunSpec": spec})
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    def found(run_id: str) -> RunRecord:
        known_form(run_id)
        try:
            record = controller.run_store.get(run_id)
        except RunRecordUnreadable as err:
            raise HTTPException(status_code=409, detail=f"{err}; the run counts as failed") from err
        if record is None:
            raise HTTPException(status_code=404, detail=f"unknown run {run_id}")
        return record

    def known_form(run_id: str) -> None:
        """An id RunStore.create could not have made (e.g. `x:eval`, which would address another Redis key) is
        unknown: 404, never a lookup."""
        if not RUN_ID.match(run_id):
            raise HTTPException(status_code=404, detail="unknown run (not a run id)")

    @app.get("/healthz", response_model=Health)
    def healthz() -> dict[str, str]:
        """Liveness: the process serves HTTP (Redis being down is not a reason to restart the controller)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Health, responses={503: {
        "model": NotReady,
        "description": "Redis does not answer, or the scheduler loop is not running or its ticks keep failing."}})
    def readyz() -> JSONResponse:
        """Readiness: Redis answers and the scheduler loop runs and its ticks succeed."""
        problems = []
        try:
            controller.client.ping()
        except Exception as err:  # noqa: BLE001
            problems.append(f"redis: {err}")
        if not controller.running:
            problems.append("scheduler loop not running")
        elif (failing := controller.tick_problem()) is not None:
            problems.append(failing)
        if problems:
            return JSONResponse(status_code=503, content={"status": "not ready", "problems": problems})
        return JSONResponse(content={"status": "ready"})

    @app.get("/v1/services", response_model=ServicesView)
    def services() -> dict[str, Any]:
        """Ready replicas of each service and the generators the next Reload goes to."""
        return controller.services_view()

    @app.post("/v1/runs", status_code=201, response_model=RunStatus, openapi_extra={"requestBody": SPEC_BODY},
              responses={**needs_token, **TOO_LARGE, **BAD_SPEC}, **guarded)
    async def submit(request: Request) -> Any:
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return JSONResponse(status_code=413, content={"detail": f"body larger than {MAX_BODY_BYTES} bytes"})
        try:
            # Parsing and validating are CPU work: off the event loop, so /healthz and reads keep answering.
            data = await run_in_threadpool(decode_body, body, request.headers.get("content-type"))
            spec = await run_in_threadpool(validate_spec, data, controller.run_store.store)
            # Creating the run claims its directory, which can still clash (a run submitted meanwhile): 422 too.
            record = await run_in_threadpool(controller.submit, spec)
        except SpecRejected as rejected:
            return JSONResponse(status_code=422, content={"detail": bounded_errors(rejected.errors)})
        return JSONResponse(status_code=201, content={"id": record.id, "state": record.state})

    @app.get("/v1/runs", response_model=RunList)
    def list_runs() -> dict[str, list[dict[str, Any]]]:
        """Every run in submission order; a run whose stored record does not load is listed as failed."""
        return {"runs": [_summary(entry) for entry in controller.run_store.runs()]}

    @app.get("/v1/runs/{run_id}", response_model=RunView, responses={**UNKNOWN_RUN, **UNREADABLE_RUN})
    def get_run(run_id: str) -> dict[str, Any]:
        """The run: state, step, policy versions, evaluations per set and step, latest metrics, queues, services."""
        return controller.view(found(run_id))

    def stored(run_id: str) -> str:
        """A run whose record exists, loadable or not: what is stored apart from the record stays readable."""
        known_form(run_id)
        if not controller.client.exists(keys.run_key(run_id)):
            raise HTTPException(status_code=404, detail=f"unknown run {run_id}")
        return run_id

    @app.get("/v1/runs/{run_id}/metrics", responses=UNKNOWN_RUN)
    def get_metrics(run_id: str, since: Annotated[int, since_query("steps' entries")] = 0) -> list[dict[str, Any]]:
        """The trainer's metrics of every step, in step order (entry i is step i + 1; a resumed trainer's replay
        replaces the entries of the steps it trains again)."""
        return controller.run_store.metrics(stored(run_id), since)

    @app.get("/v1/runs/{run_id}/syncs", response_model=list[WeightSync], responses=UNKNOWN_RUN)
    def get_syncs(run_id: str, since: Annotated[int, since_query("syncs")] = 0) -> list[dict[str, Any]]:
        """The run's weight syncs, oldest first: each version sent to the generators and how its Reload went
        (filled in once every generator has answered, so a client following the run re-reads the newest few)."""
        return controller.run_store.syncs(stored(run_id), since)

    @app.post("/v1/runs/{run_id}/cancel", response_model=RunStatus, responses={**needs_token, **UNKNOWN_RUN},
              **guarded)
    def cancel(run_id: str) -> dict[str, Any]:
        """Cancel a queued or running run; a finished one (or one whose record does not load: failed) answers
        its state unchanged."""
        known_form(run_id)
        try:
            record = controller.cancel(run_id)
        except RunRecordUnreadable as err:
            return {"id": run_id, "state": "failed", "error": str(err)}
        if record is None:
            raise HTTPException(status_code=404, detail=f"unknown run {run_id}")
        return {"id": record.id, "state": record.state}

    add_pages(app, known_form)
    return app


def add_pages(app: FastAPI, known_form: Callable[[str], None]) -> None:
    """The run list (/) and the run page (/runs/{id}): static files that read the open GET endpoints above, so they
    need no token. Not in the OpenAPI schema: they are for browsers, not clients."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    page = (STATIC / "index.html").read_text()

    def served(assets: str) -> HTMLResponse:
        """The page with its assets relative to the route, so it also works behind a proxy's path prefix."""
        return HTMLResponse(page.replace(ASSETS_PLACEHOLDER, assets), headers=PAGE_HEADERS)

    @app.get("/", include_in_schema=False)
    def run_list_page() -> HTMLResponse:
        return served("static/")

    @app.get("/runs/{run_id}", include_in_schema=False)
    def run_page(run_id: str) -> HTMLResponse:
        known_form(run_id)
        return served("../static/")  # the page's script tells the two apart


async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """405 with an `Allow` naming every method of the path: Starlette's names only the first route that matched it
    (`/v1/runs` has two)."""
    allowed = {method for route in request.app.routes
               if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE
               for method in route.methods or ()}
    return JSONResponse(status_code=405, content={"detail": "Method Not Allowed"},
                        headers={"Allow": ", ".join(sorted(allowed))})


def _summary(entry: RunRecord | RunRecordUnreadable) -> dict[str, Any]:
    if isinstance(entry, RunRecordUnreadable):
        # Run ids are "<name>-<8 hex>" (RunStore.create), so the name survives a record that does not load.
        return {"id": entry.run_id, "name": entry.run_id.rsplit("-", 1)[0], "state": "failed", "step": 0,
                "policy_version": 0, "created_at": None, "error": str(entry)}
    return {"id": entry.id, "name": entry.name, "state": entry.state, "step": entry.step,
            "policy_version": entry.policy_version, "created_at": entry.created_at, "error": entry.error}
