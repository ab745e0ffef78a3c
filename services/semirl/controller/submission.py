"""A submitted run spec: the body decoded (JSON or YAML, bounded nesting), validated, its paths resolved.

Errors are `SpecRejected`, pydantic-style dicts {loc, msg, type} that the REST API returns as 422 naming the field.
No Redis, no scheduling: the run store (run_store.py) stores what passes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from semirl.core import ownership
from semirl.core.checkpoint_store import CheckpointError, RunCheckpoints
from semirl.data.preferences import read_preferences
from semirl.data.problems import load_problems
from semirl.spec import RunSpec

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


class SpecRejected(Exception):  # noqa: N818
    """An invalid run spec; `errors` are pydantic-style dicts {loc, msg, type} (loc without "body")."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


def spec_error(loc: tuple | list, msg: str, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


MAX_NESTING = 32  # a run spec is 4 levels deep; anything far deeper is not a spec


def decode_body(body: bytes | str, content_type: str | None) -> dict[str, Any]:
    """JSON or YAML by Content-Type (anything else: YAML, which parses JSON too) into a mapping."""
    media = (content_type or "").split(";")[0].strip().lower()
    kind = "json_invalid" if media == "application/json" else "yaml_invalid"
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        data = json.loads(text) if media == "application/json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise SpecRejected([spec_error((), f"body is not valid {'JSON' if kind == 'json_invalid' else 'YAML'}: {err}",
                                   kind)]) from err
    except RecursionError as err:
        raise SpecRejected([spec_error((), f"body is nested more than {MAX_NESTING} levels deep", kind)]) from err
    if not isinstance(data, dict):
        raise SpecRejected([spec_error((), "a run spec must be a mapping", "dict_type")])
    if nesting_depth(data) > MAX_NESTING:
        raise SpecRejected([spec_error((), f"body is nested more than {MAX_NESTING} levels deep", kind)])
    return data


def nesting_depth(value: Any) -> int:
    """How deeply mappings and lists nest in `value` (iteratively: no recursion to exhaust)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_NESTING:
                pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def validate_spec(data: dict[str, Any], store: Path) -> RunSpec:
    """Validate a submitted spec (paths checked), resolve its paths to absolute ones, or raise SpecRejected."""
    try:
        spec = RunSpec.model_validate(data, context={"check_paths": True})
    except ValidationError as err:
        raise SpecRejected(
            [spec_error(e["loc"], e["msg"], e["type"]) for e in err.errors(include_url=False, include_context=False)]
        ) from err
    problems = []
    if ".." in spec.name:
        problems.append(spec_error(("name",), "run name must not contain '..'"))
    try:
        RunCheckpoints(store, "probe", spec.checkpoint.subdir)
        ownership.check_subdir(store, spec.checkpoint.subdir)  # a run owns its directory
    except (CheckpointError, OSError, ValueError) as err:  # OSError, ValueError: a name the OS refuses
        problems.append(spec_error(("checkpoint", "subdir"), str(err)))
    if problems:
        raise SpecRejected(problems)
    spec = resolve_paths(spec)
    datasets = [(("data", "train", "path"), spec.data.train)]
    datasets += [(("data", "eval", index, "path"), dataset) for index, dataset in enumerate(spec.data.eval)]
    for loc, dataset in datasets:
        try:
            if dataset.format == "preferences":
                read_preferences(dataset)  # every row: a bad one is named by row and field
            else:
                load_problems(dataset)
        except (ValueError, OSError) as err:
            problems.append(spec_error(loc, f"dataset unreadable: {err}"))
    if problems:
        raise SpecRejected(problems)
    return spec


def resolve_paths(spec: RunSpec) -> RunSpec:
    """Model and dataset paths made absolute (relative to this process' working directory)."""

    def absolute(path: str) -> str:
        return str(Path(path).expanduser().resolve())

    data = spec.data
    update: dict[str, Any] = {
        "train": data.train.model_copy(update={"path": absolute(data.train.path)}),
        "eval": [dataset.model_copy(update={"path": absolute(dataset.path)}) for dataset in data.eval],
    }
    return spec.model_copy(
        update={
            "model": spec.model.model_copy(update={"path": absolute(spec.model.path)}),
            "data": data.model_copy(update=update),
        }
    )
