"""Labels on every object; selectors name+instance+component that select exactly one component's pods."""

from __future__ import annotations

from typing import Any

from chartlib import FULLNAME, RELEASE, Manifest

REQUIRED = ("helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "app.kubernetes.io/part-of")
SELECTOR_KEYS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pod_labels(manifest: Manifest) -> dict[str, dict[str, str]]:
    """Workload or Pod name -> labels of its pods."""
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in manifest.workloads()}
    pods.update({p["metadata"]["name"]: p["metadata"]["labels"] for p in manifest.kind("Pod")})
    return pods


def test_standard_labels_everywhere(scenario: tuple[str, Manifest]) -> None:
    name, manifest = scenario
    for doc in manifest.docs:
        labels = doc["metadata"]["labels"]
        for key in REQUIRED:
            assert key in labels, (name, doc["kind"], doc["metadata"]["name"], key)
        assert labels["app.kubernetes.io/part-of"] == "semirl"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
    for labels in pod_labels(manifest).values():
        for key in REQUIRED:
            assert key in labels


def test_workload_selectors(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    for workload in manifest.workloads():
        selector = workload["spec"]["selector"]["matchLabels"]
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        assert set(selector) == SELECTOR_KEYS
        assert selector["app.kubernetes.io/component"] == component
        assert workload["metadata"]["name"] == f"{FULLNAME}-{component}"
        assert matches(selector, workload["spec"]["template"]["metadata"]["labels"])


def test_workload_selectors_never_overlap(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    pods = pod_labels(manifest)
    for workload in manifest.workloads():
        selector = workload["spec"]["selector"]["matchLabels"]
        selected = [name for name, labels in pods.items() if matches(selector, labels)]
        assert selected == [workload["metadata"]["name"]], (workload["metadata"]["name"], selected)


def selected_by(manifest: Manifest, selector: dict[str, str]) -> list[str]:
    return sorted(name for name, labels in pod_labels(manifest).items() if matches(selector, labels))


def test_each_service_selects_exactly_its_own_component(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    for service in manifest.kind("Service"):
        component = service["metadata"]["labels"]["app.kubernetes.io/component"]
        selector = service["spec"]["selector"]
        assert set(selector) == SELECTOR_KEYS
        assert selected_by(manifest, selector) == [f"{FULLNAME}-{component}"], service["metadata"]["name"]


def test_other_selectors_select_one_component(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    objects: list[tuple[str, dict[str, Any]]] = []
    for pdb in manifest.kind("PodDisruptionBudget"):
        objects.append((pdb["metadata"]["name"], pdb["spec"]["selector"]["matchLabels"]))
    for policy in manifest.kind("NetworkPolicy"):
        objects.append((policy["metadata"]["name"], policy["spec"]["podSelector"]["matchLabels"]))
    for name, selector in objects:
        assert selected_by(manifest, selector) == [name]


def test_service_ports_are_named(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    allowed = {"grpc", "http", "metrics", "redis", "dist"}
    for service in manifest.kind("Service"):
        names = {p["name"] for p in service["spec"]["ports"]}
        assert names <= allowed, service["metadata"]["name"]
    controller = manifest.get("Service", f"{FULLNAME}-controller")
    assert {p["name"]: p["port"] for p in controller["spec"]["ports"]} == {"http": 8080, "grpc": 50051, "metrics": 9090}
    redis = manifest.get("Service", f"{FULLNAME}-redis")
    assert {p["name"]: p["port"] for p in redis["spec"]["ports"]} == {"redis": 6379}


def test_pod_labels_cannot_override_selectors() -> None:
    from chartlib import render

    manifest = render(sets=("generator.podLabels.app\\.kubernetes\\.io/component=verifier",
                            "generator.podLabels.team=rl"))
    labels = manifest.workload("generator")["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "generator"
    assert labels["team"] == "rl"
