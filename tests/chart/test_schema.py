"""values.schema.json: generated from the pydantic model, up to date, self-contained, and strict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from chartlib import CHART, CI_VALUES, REPO_ROOT, helm, template_args

from semirl.deploy import schema as schema_module
from semirl.deploy.values import ChartValues, default_values

SCHEMA = CHART / "values.schema.json"


def test_committed_schema_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, "-m", "semirl.deploy.schema", "--check"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(SCHEMA.read_text()) == schema_module.build_schema()


def test_check_detects_a_stale_schema(tmp_path: Path) -> None:
    stale = tmp_path / "values.schema.json"
    stale.write_text("{}\n")
    assert schema_module.main(["--check", "--output", str(stale)]) == 1
    assert schema_module.main(["--output", str(stale)]) == 0
    assert schema_module.main(["--check", "--output", str(stale)]) == 0


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if "$ref" in node else []) + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_schema_is_self_contained_draft_2020_12() -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert "global" in schema["properties"]
    assert "$defs" in schema and "definitions" not in schema
    assert all(ref.startswith("#/$defs/") for ref in refs(schema))
    assert "$id" not in schema


def test_values_yaml_is_the_model_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values == default_values()


def test_component_blocks_share_one_shape() -> None:
    values = default_values()
    shapes = {c: set(values[c]) for c in ("controller", "generator", "verifier", "trainer", "reward")}
    common = set.intersection(*shapes.values())
    for component, keys in shapes.items():
        extra = keys - common
        own = {"http", "auth", "reloadTimeoutSeconds", "transferTimeoutSeconds", "transfer", "model", "dtype",
               "maxModelLen", "batchSize", "vllm", "maxLength", "scoreToken", "promptFormat", "maxBatchTokens",
               "compileCache", "fabric", "kueue", "tracking"}
        assert extra <= own, (component, extra)
    assert set(values["redis"]) >= {"enabled", "replicaCount", "image", "resources", "podSecurityContext",
                                    "containerSecurityContext", "pdb", "serviceAccount", "extraVolumes"}
    for component in (*shapes, "redis"):
        assert set(values[component]["image"]) == {"registry", "repository", "tag", "digest", "pullPolicy"}


@pytest.mark.parametrize("path", sorted(CI_VALUES.glob("*.yaml")), ids=lambda p: p.name)
def test_ci_values_fit_the_model(path: Path) -> None:
    ChartValues.model_validate(yaml.safe_load(path.read_text()))


BAD_VALUES = {
    "negative-replicas": ("generator: {replicaCount: -1}", "/generator/replicaCount"),
    "bad-access-mode": ("checkpoints: {accessModes: [ReadWriteSometimes]}", "/checkpoints/accessModes/0"),
    "unknown-top-level-key": ("generators: {replicaCount: 2}", "'generators' not allowed"),
    "unknown-component-key": ("verifier: {replicas: 2}", "'replicas' not allowed"),
    "hpa-and-keda": ("verifier: {autoscaling: {hpa: {enabled: true}, keda: {enabled: true}}}",
                     "/verifier/autoscaling"),
    "negative-gpus": ("trainer: {gpus: -1}", "/trainer/gpus"),
    "bad-pull-policy": ("generator: {image: {pullPolicy: Sometimes}}", "/generator/image/pullPolicy"),
    "bad-digest": ("generator: {image: {digest: latest}}", "/generator/image/digest"),
    "two-controllers": ("controller: {replicaCount: 2}", "/controller/replicaCount"),
    "no-redis-at-all": ("redis: {enabled: false}", "/externalRedis/host"),
    "bad-shm-size": ("generator: {shmSize: lots}", "/generator/shmSize"),
    "bad-quantity": ("generator: {resources: {requests: {memory: 64 gigs}}}", "/generator/resources/requests/memory"),
    "bad-port": ("verifier: {grpc: {port: 70000}}", "/verifier/grpc/port"),
    "env-without-name": ("generator: {env: [{value: x}]}", "/generator/env/0"),
    "bad-log-level": ("logLevel: LOUD", "/logLevel"),
    "gpu-memory-above-one": ("generator: {vllm: {gpuMemoryUtilization: 1.5}}", "/generator/vllm/gpuMemoryUtilization"),
    "unknown-vllm-key": ("generator: {vllm: {tensorParallelSize: 2}}", "'tensorParallelSize' not allowed"),
    "zero-reload-timeout": ("controller: {reloadTimeoutSeconds: 0}", "/controller/reloadTimeoutSeconds"),
    "absolute-staging-path": ("modelStaging: {path: /models/x}", "/modelStaging/path"),
    "bad-reward-dtype": ("reward: {dtype: int8}", "/reward/dtype"),
    "bad-reward-prompt-format": ("reward: {promptFormat: markdown}", "/reward/promptFormat"),
    "keda-min-above-zero": ("generator: {autoscaling: {keda: {minReplicaCount: -1}}}",
                            "/generator/autoscaling/keda/minReplicaCount"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_are_rejected_naming_the_field(case: str, tmp_path: Path) -> None:
    text, field = BAD_VALUES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text + "\n")
    result = helm(*template_args(values=(str(path),)), check=False)
    assert result.returncode != 0, f"helm accepted {text}"
    assert field in result.stderr, result.stderr
    with pytest.raises(pydantic.ValidationError):  # the model agrees with the schema
        ChartValues.model_validate(yaml.safe_load(text))


def test_good_overrides_pass_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("generator: {replicaCount: 0, shmSize: '', resources: {requests: {cpu: 1.5, memory: 512Mi}}}\n"
                    "global: {imageRegistry: mirror.example, somethingFromAParentChart: true}\n"
                    "redis: {enabled: false}\nexternalRedis: {host: redis.example}\n")
    helm(*template_args(values=(str(path),)))
    ChartValues.model_validate(yaml.safe_load(path.read_text()))
