"""NetworkPolicies: default-deny ingress per component, only the controller's REST port open from outside."""

from __future__ import annotations

from typing import Any

from chartlib import COMPONENTS, FULLNAME, RELEASE, Manifest, render

RELEASE_PODS = {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE,
                                                 "app.kubernetes.io/name": "semirl"}}}


def policies(manifest: Manifest) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"].removeprefix(f"{FULLNAME}-"): p["spec"] for p in manifest.kind("NetworkPolicy")}


def ports(rule: dict[str, Any]) -> set[int]:
    return {p["port"] for p in rule.get("ports", [])}


def test_a_policy_per_enabled_component(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    found = policies(manifest)
    assert set(found) == {c for c in COMPONENTS if manifest.has_workload(c)}
    for component, spec in found.items():
        assert "Ingress" in spec["policyTypes"]
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == component


def test_only_the_controller_http_port_is_open_to_everyone(default: Manifest) -> None:
    open_rules = [(component, rule) for component, spec in policies(default).items()
                  for rule in spec["ingress"] if "from" not in rule]
    assert len(open_rules) == 1
    component, rule = open_rules[0]
    assert component == "controller" and ports(rule) == {8080}


def test_grpc_only_from_the_release(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    for component, spec in policies(manifest).items():
        if component == "redis":
            continue
        grpc_rules = [rule for rule in spec["ingress"] if 50051 in ports(rule)]
        assert grpc_rules == [{"from": [RELEASE_PODS], "ports": [{"port": 50051, "protocol": "TCP"}]}], component


def test_redis_only_from_the_release(default: Manifest, autoscaled: Manifest) -> None:
    (rule,) = policies(default)["redis"]["ingress"]
    assert rule == {"from": [RELEASE_PODS], "ports": [{"port": 6379, "protocol": "TCP"}]}
    # With ScaledObjects, KEDA's operator (its own namespace) reads the streams too.
    (rule,) = policies(autoscaled)["redis"]["ingress"]
    assert rule["from"][1] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}


def test_metrics_from_the_monitoring_namespace(default: Manifest) -> None:
    for component, spec in policies(default).items():
        if component == "redis":
            continue
        (rule,) = [rule for rule in spec["ingress"] if 9090 in ports(rule)]
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


def pods_of(component: str) -> dict:
    return {"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "semirl", "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": component}}}


def test_trainer_ranks_reach_each_other_and_weight_syncs_reach_the_generators(default: Manifest) -> None:
    """Any port between the trainer's ranks (torch.distributed, NCCL), and between trainer and generators: an
    in-memory weight sync meets on the trainer's transfer port, then gloo or NCCL connect on ports of their own."""
    network = policies(default)
    trainer = [rule for rule in network["trainer"]["ingress"] if "ports" not in rule]
    assert trainer == [{"from": [pods_of("trainer")]}, {"from": [pods_of("generator")]}]
    generator = [rule for rule in network["generator"]["ingress"] if "ports" not in rule]
    assert generator == [{"from": [pods_of("trainer")]}]
    for name, other in (("verifier", "trainer"), ("reward", "trainer")):
        assert not [rule for rule in network.get(name, {"ingress": []})["ingress"] if "ports" not in rule], other


def test_egress_open_by_default(default: Manifest) -> None:
    for spec in policies(default).values():
        assert spec["policyTypes"] == ["Ingress"] and "egress" not in spec


def test_tight_mode(production: Manifest) -> None:
    found = policies(production)
    for component, spec in found.items():
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        egress = spec["egress"]
        assert {"port": 53, "protocol": "UDP"} in egress[0]["ports"]
        assert {"to": [RELEASE_PODS]} in egress
        assert {"ports": [{"port": 443, "protocol": "TCP"}]} in egress  # networkPolicy.extraEgress
        api = {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}
        assert (api in egress) is (component == "controller")
    # allowExternal: false -> the REST port only for labelled clients and the release's pods.
    (rest,) = [rule for rule in found["controller"]["ingress"] if 8080 in ports(rule)]
    assert rest["from"][0] == {"podSelector": {"matchLabels": {f"{FULLNAME}-client": "true"}}}
    assert all("from" in rule for spec in found.values() for rule in spec["ingress"])


def test_network_policy_can_be_disabled() -> None:
    assert not render(sets=("networkPolicy.enabled=false",)).kind("NetworkPolicy")
