"""Helpers of the Helm chart tests: run the venv's helm, parse what it renders, the scenarios (values files).

helm comes from `make tools` (scripts/install_k8s_tools.py, which `make test` runs) into the venv's bin/; the
tests fail, not skip, when it is missing, so a CI without it is red rather than silently green.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate.utils import latest_version

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "deploy" / "helm" / "semirl"
CI_VALUES = CHART / "ci"
HELM = Path(sys.executable).parent / "helm"
KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
RELEASE = "rel"
NAMESPACE = "semirl"
FULLNAME = "rel-semirl"
KEDA_API = "keda.sh/v1alpha1/ScaledObject"
MONITORING_API = "monitoring.coreos.com/v1/ServiceMonitor"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion), 1.33 (Endpoints deprecated: the controller uses
# EndpointSlices) and the newest release kubernetes-validate knows.
KUBE_VERSIONS = ("1.29.0", "1.33.0", latest_version())

SERVICES = ("controller", "generator", "verifier", "trainer", "reward")
COMPONENTS = (*SERVICES, "redis")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def require_helm() -> Path:
    if not HELM.exists():
        pytest.fail(f"helm is not installed at {HELM}: run `make tools` (make test does)", pytrace=False)
    return HELM


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(require_helm()), *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stderr}", pytrace=False)
    return result


def template_args(values: tuple[str, ...] = (), sets: tuple[str, ...] = (), api_versions: tuple[str, ...] = ()
                  ) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["-f", str(CI_VALUES / path) if "/" not in path else path]
    for item in sets:
        args += ["--set", item]
    for api in api_versions:
        args += ["--api-versions", api]
    return args


@dataclass
class Manifest:
    """The objects of one `helm template` run."""

    text: str
    docs: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        # yaml.safe_load_all, with libyaml's CSafeLoader when the wheel has it (same safe subset, ~10x faster).
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        self.docs = [doc for doc in yaml.load_all(self.text, Loader=loader) if doc]

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [doc for doc in self.kind(kind) if doc["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        found = [doc for doc in self.kind(kind) if doc["metadata"]["name"] == name]
        return found[0] if found else None

    def workloads(self) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] in WORKLOAD_KINDS]

    def workload(self, component: str) -> dict[str, Any]:
        found = [w for w in self.workloads() if w["metadata"]["labels"]["app.kubernetes.io/component"] == component]
        assert len(found) == 1, f"expected one workload for {component}, found {len(found)}"
        return found[0]

    def has_workload(self, component: str) -> bool:
        return any(w["metadata"]["labels"]["app.kubernetes.io/component"] == component for w in self.workloads())

    def pod_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """(object name, pod spec) of every workload's pod template and of bare Pods (the test hook)."""
        specs = [(w["metadata"]["name"], w["spec"]["template"]["spec"]) for w in self.workloads()]
        specs += [(p["metadata"]["name"], p["spec"]) for p in self.kind("Pod")]
        return specs

    def container(self, component: str) -> dict[str, Any]:
        spec = self.workload(component)["spec"]["template"]["spec"]
        return next(c for c in spec["containers"] if c["name"] == component)


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def mounts_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["mountPath"]: item for item in container.get("volumeMounts", [])}


def volumes_of(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in workload["spec"]["template"]["spec"].get("volumes", [])}


@dataclass(frozen=True)
class Scenario:
    name: str
    values: tuple[str, ...] = ()
    api_versions: tuple[str, ...] = ()


SCENARIOS = {
    "default": Scenario("default"),
    "gpu-production": Scenario("gpu-production", ("gpu-production-values.yaml",)),
    "gpu": Scenario("gpu", ("gpu-values.yaml",)),
    "autoscaling": Scenario("autoscaling", ("autoscaling-values.yaml",), (KEDA_API, MONITORING_API)),
    "cpu": Scenario("cpu", ("cpu-values.yaml",)),
    "gpu-8b-1node": Scenario("gpu-8b-1node", ("gpu-8b-1node-values.yaml",)),
    "fabric-infiniband": Scenario("fabric-infiniband", ("gpu-production-values.yaml", "fabric-infiniband-values.yaml")),
    "fabric-roce": Scenario("fabric-roce", ("gpu-production-values.yaml", "fabric-roce-multus-values.yaml")),
}


def render(values: tuple[str, ...] = (), sets: tuple[str, ...] = (), api_versions: tuple[str, ...] = ()
           ) -> Manifest:
    return Manifest(helm(*template_args(values, sets, api_versions)).stdout)


def render_error(values: tuple[str, ...] = (), sets: tuple[str, ...] = ()) -> str:
    """helm template must fail: its error output."""
    result = helm(*template_args(values, sets), check=False)
    assert result.returncode != 0, f"helm template accepted {values} {sets}"
    return result.stderr
