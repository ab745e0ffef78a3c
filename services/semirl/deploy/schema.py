"""`python -m semirl.deploy.schema [--check]`: write (or check) deploy/helm/semirl/values.schema.json.

The schema is `ChartValues.model_json_schema()` (JSON Schema draft 2020-12) with every reference inside the
document (`#/$defs/...`): Helm validates values offline, and a remote `$ref` would make install, template and
lint fetch URLs. The root rejects unknown keys and declares `global`, which Helm always injects.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from semirl.deploy.values import ChartValues

DRAFT = "https://json-schema.org/draft/2020-12/schema"
REPO_ROOT = Path(__file__).resolve().parents[3]
CHART_DIR = REPO_ROOT / "deploy" / "helm" / "semirl"
SCHEMA_PATH = CHART_DIR / "values.schema.json"

# Cross-field rule the model enforces in Python, spelled for Helm's validator as well.
_EXTERNAL_REDIS_RULE = {
    "if": {"required": ["redis"], "properties": {"redis": {"required": ["enabled"],
                                                           "properties": {"enabled": {"const": False}}}}},
    "then": {"required": ["externalRedis"],
             "properties": {"externalRedis": {"required": ["host"], "properties": {"host": {"minLength": 1}}}}},
}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def build_schema() -> dict[str, Any]:
    body = ChartValues.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = {"$schema": DRAFT, "title": "semirl Helm chart values", **body}
    schema["title"] = "semirl Helm chart values"
    schema["description"] = "Generated from semirl.deploy.values.ChartValues by `python -m semirl.deploy.schema`."
    schema.update(_EXTERNAL_REDIS_RULE)
    if schema.get("additionalProperties") is not False or "global" not in schema.get("properties", {}):
        raise RuntimeError("the root must forbid unknown keys and declare `global`")
    remote = [ref for ref in _refs(schema) if not ref.startswith("#/")]
    if remote:
        raise RuntimeError(f"the schema must be self-contained; remote references: {remote}")
    return schema


def render_schema() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semirl.deploy.schema", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed schema is out of date")
    parser.add_argument("--output", type=Path, default=SCHEMA_PATH, help="where the schema lives")
    args = parser.parse_args(argv)
    text = render_schema()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run `python -m semirl.deploy.schema`", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
