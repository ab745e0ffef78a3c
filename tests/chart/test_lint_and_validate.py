"""helm lint (strict) and Kubernetes schema validation of every rendered scenario (kubernetes-validate --strict)."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from chartlib import (
    CHART,
    CI_VALUES,
    KUBE_VERSIONS,
    KUBERNETES_VALIDATE,
    SCENARIOS,
    Manifest,
    helm,
)

# Custom resources kubernetes-validate has no schema for (their shape is checked in test_autoscaling.py).
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"}


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
def test_helm_lint_default(strict: bool) -> None:
    result = helm("lint", str(CHART), *(["--strict"] if strict else []))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", sorted(p.name for p in CI_VALUES.glob("*.yaml")))
def test_helm_lint_ci_values(values: str) -> None:
    result = helm("lint", str(CHART), "--strict", "-f", str(CI_VALUES / values))
    assert "0 chart(s) failed" in result.stdout


@pytest.fixture(scope="session")
def validation(rendered: dict[str, Manifest], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """kubernetes-validate --strict on each scenario, for the oldest supported and a current Kubernetes."""
    if not KUBERNETES_VALIDATE.exists():
        pytest.fail(f"kubernetes-validate is missing at {KUBERNETES_VALIDATE}: pip install -e '.[dev]'")
    folder = tmp_path_factory.mktemp("rendered")

    def run(name: str) -> tuple[str, str]:
        path = folder / f"{name}.yaml"
        path.write_text(rendered[name].text)
        versions = [arg for version in KUBE_VERSIONS for arg in ("-k", version)]
        result = subprocess.run([str(KUBERNETES_VALIDATE), "--strict", "--quiet", *versions, str(path)],
                                capture_output=True, text=True, timeout=120)
        return name, f"rc={result.returncode}\n{result.stdout}{result.stderr}"

    with ThreadPoolExecutor(max_workers=len(SCENARIOS)) as pool:
        return dict(pool.map(run, SCENARIOS))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_kubernetes_validate_strict(name: str, validation: dict[str, str], rendered: dict[str, Manifest]) -> None:
    output = validation[name]
    lines = output.splitlines()
    assert lines[0] == "rc=0", output
    assert not [line for line in lines if line.startswith(("ERROR", "FATAL"))], output
    unknown = [line for line in lines if line.startswith("WARN") and not any(f"kind {k} " in line for k in CRD_KINDS)]
    assert not unknown, output
    # Everything but the custom resources was really validated.
    kinds = {doc["kind"] for doc in rendered[name].docs}
    assert kinds - CRD_KINDS, kinds


def test_every_scenario_renders_the_core(rendered: dict[str, Manifest]) -> None:
    for name, manifest in rendered.items():
        for component in ("controller", "generator", "verifier", "trainer", "redis"):
            assert manifest.has_workload(component), (name, component)


def test_chart_yaml() -> None:
    import yaml

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["kubeVersion"] == ">=1.29.0-0"
    assert chart["appVersion"] == "0.1.0"
    assert "dependencies" not in chart
    assert not (CHART / "charts").exists()
    assert not Path(CHART / "Chart.lock").exists()


def test_kube_version_gate() -> None:
    from chartlib import template_args

    too_old = helm(*template_args(), "--kube-version", "1.28.0", check=False)
    assert too_old.returncode != 0 and ">=1.29.0-0" in too_old.stderr
    helm(*template_args(), "--kube-version", "1.29.0")
