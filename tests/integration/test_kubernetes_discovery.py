"""The controller in a cluster: EndpointSlice discovery and the Reload fan-out it drives.

The Kubernetes API here is a FAKE (tests/integration/kube_fake.py): no real API server can run on these
machines. It serves the EndpointSlice list and watch calls over real HTTP, in the shapes and with the
semantics (resource versions, 410 after compaction, bearer tokens) of the real one. Everything else is
real: redis-server, the Controller with its gRPC server, checkpoints on disk, and gRPC GeneratorService
servers standing in for generator pods. Those servers record the Reload calls they get instead of loading
weights into vLLM, because what is under test is *which* pods the controller reaches; real generators'
Reload is covered by tests/integration/test_generator.py and the end-to-end suite.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kube_fake import FakeKubeAPI, Pod  # a sibling module (pytest puts this test's folder on sys.path)
from trainer_harness import wait_for

from semirl.controller.controller import Controller
from semirl.controller.discovery import (
    EndpointSliceDiscovery,
    RedisDiscovery,
    discovery_from_env,
    parse_services,
    slice_endpoints,
)
from semirl.controller.kubeapi import KubeAPI, KubeConfig
from semirl.core.checkpoint_store import RunCheckpoints, staged_directory
from semirl.core.grpc_server import ServiceServer
from semirl.core.runstate import load_run
from semirl.proto import generator_pb2, generator_pb2_grpc
from semirl.spec import parse_run_spec

SLICES_PATH = "/apis/discovery.k8s.io/v1/namespaces/rl/endpointslices"
PODS_PATH = "/api/v1/namespaces/rl/pods"
SERVICES = {"generator": "rl-semirl-generator", "verifier": "rl-semirl-verifier", "trainer": "rl-semirl-trainer"}


class ReloadRecorder(generator_pb2_grpc.GeneratorServiceServicer):
    def __init__(self) -> None:
        self.versions: list[int] = []

    def Reload(self, request, context):  # noqa: ANN001, ANN201, N802
        self.versions.append(request.policy.version)
        return generator_pb2.ReloadResponse(policy_version=request.policy.version, seconds=0.01, reloaded=True)


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(namespace="rl") as api:
        yield api


@pytest.fixture
def kube_config(kube: FakeKubeAPI, tmp_path: Path) -> KubeConfig:
    token = tmp_path / "token"
    token.write_text(kube.token)
    return KubeConfig(kube.url, "rl", token_file=token)


@pytest.fixture
def discovery(kube_config: KubeConfig) -> Iterator[EndpointSliceDiscovery]:
    found = EndpointSliceDiscovery(KubeAPI(kube_config), SERVICES, watch_timeout_s=5)
    yield found
    found.stop()


@pytest.fixture
def generator_pods() -> Iterator[dict[str, tuple[ReloadRecorder, int]]]:
    """Three gRPC GeneratorService servers on loopback: pod name -> (recorder, port)."""
    servers, pods = [], {}
    for index in range(3):
        recorder = ReloadRecorder()
        server = ServiceServer("127.0.0.1:0", "semirl.v1.GeneratorService")
        server.add(generator_pb2_grpc.add_GeneratorServiceServicer_to_server, recorder)
        server.start()
        servers.append(server)
        pods[f"rl-semirl-generator-{index}"] = (recorder, server.port)
    yield pods
    for server in servers:
        server.stop(0)


def endpoint_slice(endpoints: list[dict[str, Any]], ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": "s"}, "endpoints": endpoints, "ports": ports}


# --- reading one EndpointSlice -----------------------------------------------------------------------


def test_slice_endpoints_follow_the_api_conventions() -> None:
    grpc_port = [{"name": "metrics", "port": 9090}, {"name": "grpc", "port": 50051}]
    found = slice_endpoints(endpoint_slice([
        {"addresses": ["10.0.0.1"], "conditions": {"ready": True}, "targetRef": {"name": "gen-a"}},
        {"addresses": ["10.0.0.2"], "conditions": {}, "targetRef": {"name": "gen-b"}},  # unknown = ready
        {"addresses": ["10.0.0.3"], "conditions": {"ready": False}, "targetRef": {"name": "gen-c"}},
        {"addresses": ["10.0.0.4"], "conditions": {"ready": False, "terminating": True},
         "targetRef": {"name": "gen-d"}},
        {"addresses": ["fd00::5"], "conditions": {"ready": True}, "targetRef": {"name": "gen-e"}},
        {"addresses": [], "conditions": {"ready": True}},
    ], grpc_port))
    assert [(e.instance, e.address, e.ready) for e in found] == [
        ("gen-a", "10.0.0.1:50051", True), ("gen-b", "10.0.0.2:50051", True), ("gen-c", "10.0.0.3:50051", False),
        ("gen-e", "[fd00::5]:50051", True),
    ]
    assert slice_endpoints(endpoint_slice([{"addresses": ["10.0.0.1"]}], [{"name": "metrics", "port": 9090}])) == []


def test_services_setting_is_parsed_strictly() -> None:
    assert parse_services(" generator=a , verifier=b ,") == {"generator": "a", "verifier": "b"}
    with pytest.raises(ValueError, match="component=service-name"):
        parse_services("generator")


def test_discovery_mode_comes_from_the_environment(redis_client: redis.Redis, kube: FakeKubeAPI) -> None:
    # Outside a cluster (no KUBERNETES_SERVICE_HOST): the Redis registrations.
    assert isinstance(discovery_from_env(redis_client, {}), RedisDiscovery)
    in_pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "SEMIRL_K8S_NAMESPACE": "rl",
              "SEMIRL_K8S_SERVICES": "generator=rl-semirl-generator"}
    chosen = discovery_from_env(redis_client, in_pod)
    assert isinstance(chosen, EndpointSliceDiscovery) and chosen.api.config.base_url == "https://10.96.0.1:443"
    assert isinstance(discovery_from_env(redis_client, {**in_pod, "SEMIRL_DISCOVERY": "redis"}), RedisDiscovery)
    with pytest.raises(ValueError, match="SEMIRL_K8S_SERVICES"):
        discovery_from_env(redis_client, {"SEMIRL_DISCOVERY": "kubernetes", "SEMIRL_K8S_API": kube.url})
    with pytest.raises(ValueError, match="no in-cluster API"):
        discovery_from_env(redis_client, {"SEMIRL_DISCOVERY": "kubernetes", "SEMIRL_K8S_SERVICES": "generator=g"})


# --- the informer against the fake API ----------------------------------------------------------------


def test_informer_follows_scale_up_and_down(kube: FakeKubeAPI, discovery: EndpointSliceDiscovery) -> None:
    kube.set_service_pods("rl-semirl-generator", [Pod("gen-0", "10.1.0.10")])
    kube.set_service_pods("rl-semirl-verifier", [Pod("ver-0", "10.1.1.10"), Pod("ver-1", "10.1.1.11", ready=False)])
    kube.set_service_pods("unrelated", [Pod("other-0", "10.9.0.1")])
    discovery.start()
    wait_for(discovery.synced.is_set)
    assert discovery.endpoints("generator") == {"gen-0": "10.1.0.10:50051"}
    assert discovery.replicas() == {"generator": {"ready": 1, "total": 1}, "verifier": {"ready": 1, "total": 2},
                                    "trainer": {"ready": 0, "total": 0}}

    # kubectl scale --replicas=3: two pods appear, not ready until their model is loaded, then ready.
    kube.set_service_pods("rl-semirl-generator", [Pod("gen-0", "10.1.0.10"), Pod("gen-1", "10.1.0.11", ready=False),
                                                   Pod("gen-2", "10.1.0.12", ready=False)])
    wait_for(lambda: discovery.replicas()["generator"] == {"ready": 1, "total": 3})
    assert discovery.endpoints("generator") == {"gen-0": "10.1.0.10:50051"}  # no Reload to a loading pod
    kube.set_service_pods("rl-semirl-generator", [Pod("gen-0", "10.1.0.10"), Pod("gen-1", "10.1.0.11"),
                                                   Pod("gen-2", "10.1.0.12")])
    wait_for(lambda: len(discovery.endpoints("generator")) == 3)

    # kubectl scale --replicas=1: terminating pods leave at once, then the slice drops them.
    kube.set_service_pods("rl-semirl-generator", [Pod("gen-0", "10.1.0.10"),
                                                   Pod("gen-1", "10.1.0.11", terminating=True),
                                                   Pod("gen-2", "10.1.0.12", terminating=True)])
    wait_for(lambda: discovery.endpoints("generator") == {"gen-0": "10.1.0.10:50051"})
    assert discovery.replicas()["generator"] == {"ready": 1, "total": 1}
    kube.set_service_pods("rl-semirl-generator", [])  # scaled to zero: the slice is deleted
    wait_for(lambda: discovery.replicas()["generator"] == {"ready": 0, "total": 0})

    # Only what the chart's Role grants: list and watch EndpointSlices in the release namespace, with a token.
    assert kube.requests and all(r.method == "GET" and r.path == SLICES_PATH
                                 and r.authorization == f"Bearer {kube.token}" for r in kube.requests)
    watches = [r for r in kube.requests if r.query.get("watch") == "true"]
    assert watches and all(r.query["labelSelector"] == discovery.selector for r in watches)
    assert "rl-semirl-generator" in discovery.selector and "unrelated" not in discovery.selector


def test_informer_relists_after_compaction_and_outage(kube: FakeKubeAPI, discovery: EndpointSliceDiscovery) -> None:
    kube.set_service_pods("rl-semirl-generator", [Pod("gen-0", "10.1.0.10")])
    discovery.start()
    wait_for(lambda: discovery.endpoints("generator") == {"gen-0": "10.1.0.10:50051"})

    kube.down = True   # API server restart: the open watch drops, new requests fail, the informer backs off
    kube.compact()     # and the history it would resume from is gone (410 Gone for its resourceVersion)
    kube.set_service_pods("rl-semirl-generator", [Pod("gen-0", "10.1.0.10"), Pod("gen-1", "10.1.0.11")])
    wait_for(lambda: not discovery.synced.is_set())  # it noticed the outage
    kube.down = False
    wait_for(lambda: discovery.endpoints("generator") == {"gen-0": "10.1.0.10:50051", "gen-1": "10.1.0.11:50051"},
               timeout=20)
    lists = [r for r in kube.requests if r.query.get("watch") != "true"]
    assert len(lists) >= 2  # the first list, and at least one relist after the outage


def test_pods_without_endpoints_count_as_pending(kube: FakeKubeAPI, kube_config: KubeConfig) -> None:
    """A scale-up stuck on a GPU: the pods exist (Pending) long before they show up in any EndpointSlice."""
    discovery = EndpointSliceDiscovery(KubeAPI(kube_config), SERVICES, watch_timeout_s=5,
                                       pod_selector="app.kubernetes.io/instance=rl,app.kubernetes.io/name=semirl")
    try:
        kube.set_service_pods("rl-semirl-generator", [Pod("gen-0", "10.1.0.10")])
        kube.set_pod("gen-0", "generator")
        kube.set_pod("ver-0", "verifier", "Pending")
        discovery.start()
        wait_for(lambda: discovery.replicas()["generator"] == {"ready": 1, "total": 1, "pending": 0})
        kube.set_pod("gen-1", "generator", "Pending")
        kube.set_pod("gen-2", "generator", "Pending")
        wait_for(lambda: discovery.replicas()["generator"] == {"ready": 1, "total": 3, "pending": 2})
        assert discovery.replicas()["verifier"] == {"ready": 0, "total": 1, "pending": 1}
        kube.set_pod("gen-0", "generator", deleting=True)   # scale-down: terminating pods no longer count
        kube.set_pod("gen-2", "generator", gone=True)
        wait_for(lambda: discovery.replicas()["generator"]["total"] == 1)
        assert {r.path for r in kube.requests} == {SLICES_PATH, PODS_PATH}
    finally:
        discovery.stop()


def test_reads_before_the_first_sync_ask_the_api(kube: FakeKubeAPI, discovery: EndpointSliceDiscovery) -> None:
    """A fan-out right after the controller starts must not go to nobody while the informer is still starting."""
    kube.set_service_pods("rl-semirl-generator", [Pod("gen-0", "10.1.0.10")])
    assert discovery.endpoints("generator") == {"gen-0": "10.1.0.10:50051"}


# --- the controller: Reload fan-out during a run, across a scale-up and a scale-down ------------------


def write_policy(store: Path, run_id: str, version: int) -> Path:
    checkpoints = RunCheckpoints(store, run_id)
    with staged_directory(checkpoints.policy_dir(version), {"step": version}) as staging:
        (staging / "config.json").write_text("{}")
        (staging / "model.safetensors").write_bytes(bytes([version]) * 64)
    return checkpoints.policy_dir(version)


def commit(controller: Controller, run_id: str, store: Path, version: int) -> None:
    path = write_policy(store, run_id, version)
    committed, error = controller.commit(run_id, version, str(path), final=False)
    assert committed, error


def test_reload_fan_out_follows_kubectl_scale_during_a_run(
    kube: FakeKubeAPI, discovery: EndpointSliceDiscovery, generator_pods: dict[str, tuple[ReloadRecorder, int]],
    redis_client: redis.Redis, tmp_path: Path,
) -> None:
    model = tmp_path / "seed"
    model.mkdir()
    (model / "config.json").write_text("{}")
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"problem": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(20)))
    store = tmp_path / "store"

    def publish(*ready: str) -> None:
        # Every "pod" listens on loopback with its own port, so each sits in its own slice of the one Service,
        # as the EndpointSlice controller groups endpoints by port. A pod not in `ready` is gone.
        for name, (_, port) in generator_pods.items():
            kube.set_service_pods("rl-semirl-generator", [Pod(name, "127.0.0.1")] if name in ready else [],
                                  port=port, slice_name=f"{name}-slice")

    names = sorted(generator_pods)
    publish(names[0])

    controller = Controller(redis_client, store, reload_timeout_s=5.0, discovery=discovery)
    controller.start()
    try:
        spec = parse_run_spec({"name": "k8s", "model": {"path": str(model)}, "data": {"train": {"path": str(train)}},
                               "sync": {"interval": 2}, "train": {"steps": 8, "batch_prompts": 2}},
                              check_paths=True)
        run_id = controller.submit(spec).id
        wait_for(lambda: load_run(redis_client, run_id).state == "running")
        recorders = {name: generator_pods[name][0] for name in names}

        commit(controller, run_id, store, 2)  # one generator pod
        assert controller.reloads.wait_idle(10)
        assert {n: r.versions for n, r in recorders.items()} == {names[0]: [2], names[1]: [], names[2]: []}

        publish(*names)  # kubectl scale --replicas=3, and the new pods became ready
        wait_for(lambda: controller.view(load_run(redis_client, run_id))["replicas"]["generator"]
                   == {"ready": 3, "total": 3})
        commit(controller, run_id, store, 4)
        assert controller.reloads.wait_idle(10)
        assert {n: r.versions for n, r in recorders.items()} == {names[0]: [2, 4], names[1]: [4], names[2]: [4]}
        assert sorted(o.generator_id for o in controller.last_reload if o.ok) == names

        publish(*names[1:])  # kubectl scale down: the first pod is gone
        wait_for(lambda: controller.view(load_run(redis_client, run_id))["replicas"]["generator"]
                   == {"ready": 2, "total": 2})
        commit(controller, run_id, store, 6)
        assert controller.reloads.wait_idle(10)
        assert {n: r.versions for n, r in recorders.items()} == {names[0]: [2, 4], names[1]: [4, 6],
                                                                 names[2]: [4, 6]}
        view = controller.view(load_run(redis_client, run_id))
        assert view["discovery"] == "kubernetes" and sorted(view["generators"]) == names[1:]
        assert [(r["generator"], r["ok"]) for r in view["last_reload"]] == [(n, True) for n in names[1:]]
        assert load_run(redis_client, run_id).syncs == 3
    finally:
        controller.stop()
