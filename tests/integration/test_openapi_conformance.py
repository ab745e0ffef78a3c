"""The controller's REST API does what its OpenAPI schema says: a bounded, reproducible schemathesis run (fixed
seed, deterministic generation, no example database) against the real FastAPI app on the real Redis, its scheduler
loop running. Every built-in check, except:
- `max_response_time`: it needs a time limit, and timings on a shared CI machine are not a property of the API.
- `negative_data_rejection` on `POST /v1/runs`: a spec is validated in pydantic's lax mode, which turns `"5"` into
  5 and `false` into 0.0, so some bodies of the wrong JSON type are rightly accepted (YAML 1.1 reads `lr: 1e-4` as a
  string). The schema cannot say so; every other operation keeps the check.
- `positive_data_acceptance` on `POST /v1/runs` also expects 422: a spec valid by the schema can name paths that
  do not exist on the controller or break a rule across fields (eval.every against sync.interval); the request
  body's description and its documented 422 say so.
Two runs:
- "token", the chart's configuration: every phase (examples, coverage, fuzzing, stateful). Schemathesis sends the
  token and checks that requests without it, or with another one, get the documented 401. The example spec's files
  do not exist here, so every body is refused: each of the coverage phase's ~1,500 body variants that the API
  accepted would be a run, and each run makes the next submission's directory check longer.
- "open", no token (no security declared, no 401): the example spec's files exist, so the examples phase gets a 201
  and the stateful phase follows the run it created to its view, metrics and cancel. No coverage phase: its cases
  are the token run's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

from semirl.controller.app import RUN_SPEC_EXAMPLE, create_app
from semirl.controller.controller import Controller

MAX_EXAMPLES = 25
TOKEN = "s3cret"


def schemathesis_config(api_token: str | None, coverage: bool) -> SchemathesisConfig:
    config: dict[str, Any] = {
        "seed": 8,
        "workers": 1,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "checks": {"enabled": True},
        "phases": {"coverage": {"enabled": coverage}},
        "operations": [{
            "include-name": "POST /v1/runs",
            "checks": {"negative_data_rejection": {"enabled": False},
                       "positive_data_acceptance": {"expected-statuses": [201, 422]}},
        }],
    }
    if api_token:
        config["auth"] = {"openapi": {"HTTPBearer": {"bearer": api_token}}}
    return SchemathesisConfig.from_dict(config)


def example_files(root: Path) -> None:
    """The model directory and training set RUN_SPEC_EXAMPLE names, relative to `root`."""
    model = root / RUN_SPEC_EXAMPLE["model"]["path"]
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    train = root / RUN_SPEC_EXAMPLE["data"]["train"]["path"]
    train.parent.mkdir(parents=True)
    train.write_text("".join(json.dumps({"problem": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(8)))


@pytest.mark.parametrize("api_token", [TOKEN, None], ids=["token", "open"])
def test_the_api_conforms_to_its_openapi_schema(
    controller: Controller, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_token: str | None
) -> None:
    accepting = api_token is None
    monkeypatch.chdir(tmp_path)  # the example's relative paths resolve here
    if accepting:
        example_files(tmp_path)
    app = create_app(controller, api_token=api_token)
    config = schemathesis_config(api_token, coverage=not accepting)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    problems: list[str] = []
    phases: dict[str, Status] = {}
    controller.start()
    try:
        for event in from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                problems += [f"{event.recorder.label}: {node.name}: {node.failure_info.failure.title}\n"
                             f"{node.failure_info.failure.message}\n{node.failure_info.code_sample}"
                             for nodes in event.recorder.checks.values() for node in nodes if node.failure_info]
            elif isinstance(event, events.NonFatalError | events.FatalError):
                problems.append(str(event.info if isinstance(event, events.NonFatalError) else event.exception))
            elif isinstance(event, events.PhaseFinished):
                phases[event.phase.name.value] = event.status
            elif isinstance(event, events.EngineFinished):
                problems += [f"{failure.title}: {failure.message}" for failure in event.failures]
    finally:
        controller.stop()
    assert not problems, "\n\n".join(problem[:3000] for problem in dict.fromkeys(problems))
    ran = ("examples", "fuzzing", "stateful") if accepting else ("examples", "coverage", "fuzzing", "stateful")
    assert all(phases[name] == Status.SUCCESS for name in ran), phases
    created = [run_id for run_id in controller.run_store.run_ids() if run_id.startswith(RUN_SPEC_EXAMPLE["name"])]
    assert bool(created) == accepting


def test_the_spec_body_is_the_run_spec_and_401_is_documented_only_with_a_token(controller: Controller) -> None:
    for api_token in (None, TOKEN):
        schema = create_app(controller, api_token=api_token).openapi()
        submit = schema["paths"]["/v1/runs"]["post"]
        body = submit["requestBody"]["content"]
        assert {media["schema"]["$ref"] for media in body.values()} == {"#/components/schemas/RunSpec"}
        assert set(schema["components"]["schemas"]["RunSpec"]["required"]) == {"name", "model", "data", "train"}
        for operation in (submit, schema["paths"]["/v1/runs/{run_id}/cancel"]["post"]):
            assert ("401" in operation["responses"]) == bool(api_token)
            assert ("security" in operation) == bool(api_token)
