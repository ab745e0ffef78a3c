"""KEDA ScaledObjects (redis-streams), HPAs, PodDisruptionBudgets and ServiceMonitors."""

from __future__ import annotations

import pytest
from chartlib import FULLNAME, KEDA_API, MONITORING_API, NAMESPACE, SERVICES, Manifest, helm, render, template_args

from semirl.core import keys

# Trigger metadata keys of KEDA's redis-streams scaler (keda.sh docs, "Redis Streams" scaler).
REDIS_STREAMS_KEYS = {
    "address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv", "usernameFromEnv", "passwordFromEnv",
    "stream", "consumerGroup", "pendingEntriesCount", "streamLength", "lagCount", "activationLagCount",
    "enableTLS", "unsafeSsl", "databaseIndex",
}
SCALED_OBJECT_SPEC_KEYS = {
    "scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod",
    "initialCooldownPeriod", "idleReplicaCount", "fallback", "advanced", "triggers",
}
STREAMS = {
    "generator": (keys.PROMPTS, keys.GENERATORS_GROUP),
    "verifier": (keys.TO_VERIFY, keys.VERIFIERS_GROUP),
    "reward": (keys.TO_REWARD, keys.REWARDS_GROUP),
}


def scale_targets(manifest: Manifest) -> list[str]:
    return [d["spec"]["scaleTargetRef"]["name"] for d in manifest.kind("HorizontalPodAutoscaler")
            + manifest.kind("ScaledObject")]


# ------------------------------------------------------------------------------------------------------------ KEDA
def test_scaled_objects_on_the_redis_streams(autoscaled: Manifest) -> None:
    objects = {so["metadata"]["name"]: so for so in autoscaled.kind("ScaledObject")}
    assert set(objects) == {f"{FULLNAME}-{c}" for c in STREAMS}
    for component, (stream, group) in STREAMS.items():
        so = objects[f"{FULLNAME}-{component}"]
        spec = so["spec"]
        assert set(spec) <= SCALED_OBJECT_SPEC_KEYS
        target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{FULLNAME}-{component}"}
        assert spec["scaleTargetRef"] == target
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
        triggers = spec["triggers"]
        assert triggers, component
        for trigger in triggers:
            assert trigger["type"] == "redis-streams"
            metadata = trigger["metadata"]
            assert set(metadata) <= REDIS_STREAMS_KEYS, set(metadata) - REDIS_STREAMS_KEYS
            assert all(isinstance(value, str) for value in metadata.values()), metadata
            assert metadata["stream"] == stream and metadata["consumerGroup"] == group
            assert metadata["address"] == f"{FULLNAME}-redis.{NAMESPACE}.svc.cluster.local:6379"
            assert trigger["authenticationRef"] == {"name": f"{FULLNAME}-redis-keda"}
        pending = [t for t in triggers if "pendingEntriesCount" in t["metadata"]]
        lag = [t for t in triggers if "lagCount" in t["metadata"]]
        assert len(pending) == 1 and len(lag) == 1
        assert "activationLagCount" in lag[0]["metadata"]
        assert "lagCount" not in pending[0]["metadata"]  # KEDA would switch that trigger to lag mode


def test_keda_values_reach_the_scaled_object(autoscaled: Manifest) -> None:
    generator = autoscaled.get("ScaledObject", f"{FULLNAME}-generator")["spec"]
    assert generator["cooldownPeriod"] == 900
    behavior = generator["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600
    pending = next(t for t in generator["triggers"] if "pendingEntriesCount" in t["metadata"])
    assert pending["metadata"]["pendingEntriesCount"] == "64"
    reward = autoscaled.get("ScaledObject", f"{FULLNAME}-reward")["spec"]
    assert reward["minReplicaCount"] == 0
    lag = next(t for t in reward["triggers"] if "lagCount" in t["metadata"])
    assert lag["metadata"]["lagCount"] == "32" and lag["metadata"]["activationLagCount"] == "1"
    verifier = autoscaled.get("ScaledObject", f"{FULLNAME}-verifier")["spec"]
    assert verifier["fallback"] == {"failureThreshold": 3, "replicas": 4}


def test_trigger_authentication_reads_the_redis_secret(autoscaled: Manifest) -> None:
    (auth,) = autoscaled.kind("TriggerAuthentication")
    assert auth["metadata"]["name"] == f"{FULLNAME}-redis-keda"
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": f"{FULLNAME}-redis", "key": "redis-password"}]


def test_lag_trigger_can_be_switched_off() -> None:
    manifest = render(sets=("verifier.autoscaling.keda.enabled=true", "verifier.autoscaling.keda.lagCount=null",
                            "redis.auth.enabled=false"), api_versions=(KEDA_API,))
    (so,) = manifest.kind("ScaledObject")
    (trigger,) = so["spec"]["triggers"]
    assert "pendingEntriesCount" in trigger["metadata"] and "authenticationRef" not in trigger
    assert not manifest.kind("TriggerAuthentication")


def test_no_scaled_objects_or_monitors_without_the_capabilities() -> None:
    manifest = render(("autoscaling-values.yaml",))
    assert not manifest.kind("ScaledObject")
    assert not manifest.kind("TriggerAuthentication")
    assert not manifest.kind("ServiceMonitor")
    assert not manifest.kind("HorizontalPodAutoscaler")
    # With no ScaledObject to own the replica count, the Deployments keep theirs (KEDA on a cluster without KEDA).
    for component in ("generator", "verifier"):
        assert manifest.workload(component)["spec"]["replicas"] >= 1, component


def test_replicas_omitted_when_autoscaled(autoscaled: Manifest, default: Manifest) -> None:
    for component in STREAMS:
        assert "replicas" not in autoscaled.workload(component)["spec"], component
    for component in ("controller", "trainer", "redis"):
        assert autoscaled.workload(component)["spec"]["replicas"] == 1
    for component in ("generator", "verifier"):
        assert default.workload(component)["spec"]["replicas"] == 1


def test_one_autoscaler_per_workload(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    assert len(scale_targets(manifest)) == len(set(scale_targets(manifest)))


def test_hpa() -> None:
    mixed = render(sets=("verifier.autoscaling.hpa.enabled=true", "verifier.autoscaling.hpa.maxReplicas=10",
                         "generator.autoscaling.keda.enabled=true"), api_versions=(KEDA_API,))
    (hpa,) = mixed.kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{FULLNAME}-verifier"
    assert hpa["spec"]["maxReplicas"] == 10
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 80}
    assert [so["spec"]["scaleTargetRef"]["name"] for so in mixed.kind("ScaledObject")] == [f"{FULLNAME}-generator"]
    targets = scale_targets(mixed)
    assert len(targets) == len(set(targets)) == 2
    assert "replicas" not in mixed.workload("verifier")["spec"]
    assert "replicas" not in mixed.workload("generator")["spec"]


def test_hpa_and_keda_on_one_workload_is_rejected() -> None:
    sets = ("generator.autoscaling.hpa.enabled=true", "generator.autoscaling.keda.enabled=true")
    schema_error = helm(*template_args(sets=sets, api_versions=(KEDA_API,)), check=False)
    assert schema_error.returncode != 0 and "/generator/autoscaling" in schema_error.stderr
    # The template refuses it as well (for a caller that skips schema validation).
    template_error = helm(*template_args(sets=sets, api_versions=(KEDA_API,)), "--skip-schema-validation", check=False)
    assert template_error.returncode != 0
    assert "generator.autoscaling: hpa.enabled and keda.enabled are mutually exclusive" in template_error.stderr


@pytest.mark.parametrize("component", ["controller", "trainer"])
def test_controller_and_trainer_are_never_autoscaled(component: str) -> None:
    result = helm(*template_args(sets=(f"{component}.autoscaling.keda.enabled=true",)), check=False)
    assert result.returncode != 0 and f"{component}.autoscaling" in result.stderr


# ------------------------------------------------------------------------------------------------------------- PDB
def pdbs(manifest: Manifest) -> dict[str, dict]:
    return {p["metadata"]["name"].removeprefix(f"{FULLNAME}-"): p["spec"] for p in manifest.kind("PodDisruptionBudget")}


def test_no_pdb_for_single_replicas(default: Manifest, cpu: Manifest) -> None:
    assert pdbs(default) == {} and pdbs(cpu) == {}


def test_pdbs_where_replicas_exceed_one(production: Manifest) -> None:
    found = pdbs(production)
    assert set(found) == {"generator", "verifier"}
    for spec in found.values():
        assert spec["maxUnavailable"] == 1 and "minAvailable" not in spec
    for pdb in production.kind("PodDisruptionBudget"):
        assert pdb["apiVersion"] == "policy/v1"


def test_pdbs_where_autoscaled(autoscaled: Manifest) -> None:
    assert set(pdbs(autoscaled)) == {"generator", "verifier", "reward"}


def test_pdb_min_available_and_trainer_opt_in() -> None:
    manifest = render(sets=("verifier.replicaCount=3", "verifier.pdb.minAvailable=2",
                            "trainer.replicaCount=2", "trainer.pdb.enabled=true"))
    found = pdbs(manifest)
    assert found["verifier"]["minAvailable"] == 2 and "maxUnavailable" not in found["verifier"]
    assert found["trainer"]["maxUnavailable"] == 1


# ---------------------------------------------------------------------------------------------- ServiceMonitors
def test_service_monitors(autoscaled: Manifest) -> None:
    monitors = {m["metadata"]["name"]: m for m in autoscaled.kind("ServiceMonitor")}
    enabled = [c for c in SERVICES if autoscaled.has_workload(c)]
    assert set(monitors) == {f"{FULLNAME}-{c}" for c in enabled}
    for component in enabled:
        monitor = monitors[f"{FULLNAME}-{component}"]
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
        assert endpoint["interval"] == "30s" and endpoint["scrapeTimeout"] == "25s"
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [s for s in autoscaled.kind("Service")
                    if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
                    and any(p["name"] == "metrics" for p in s["spec"]["ports"])]
        assert [s["metadata"]["name"] for s in services] == [f"{FULLNAME}-{component}"]


def test_service_monitor_needs_the_capability_and_a_metrics_port() -> None:
    sets = ("generator.serviceMonitor.enabled=true", "verifier.serviceMonitor.enabled=true", "verifier.metrics.port=0")
    assert not render(sets=sets).kind("ServiceMonitor")
    manifest = render(sets=sets, api_versions=(MONITORING_API,))
    assert [m["metadata"]["name"] for m in manifest.kind("ServiceMonitor")] == [f"{FULLNAME}-generator"]
    verifier = manifest.get("Service", f"{FULLNAME}-verifier")
    assert [p["name"] for p in verifier["spec"]["ports"]] == ["grpc"]
