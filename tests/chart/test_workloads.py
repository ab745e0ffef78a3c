"""Pods of every component: probes, resources and GPUs, security contexts, volumes, environment, images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chartlib import FULLNAME, NAMESPACE, SERVICES, Manifest, env_of, mounts_of, render, volumes_of

GPU = "nvidia.com/gpu"
GRPC_SERVICES = SERVICES  # every semirl service runs a gRPC server with grpc.health.v1


def enabled_services(manifest: Manifest) -> list[str]:
    return [c for c in GRPC_SERVICES if manifest.has_workload(c)]


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


# ---------------------------------------------------------------------------------------------------------- probes
def test_grpc_probes_use_numeric_port_and_health_service_names(scenario: tuple[str, Manifest]) -> None:
    name, manifest = scenario
    for component in enabled_services(manifest):
        if component == "controller":
            continue
        container = manifest.container(component)
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
        assert port == 50051
        expected = {"startupProbe": "liveness", "livenessProbe": "liveness", "readinessProbe": "readiness"}
        for probe, service in expected.items():
            grpc = container[probe]["grpc"]
            assert grpc == {"port": port, "service": service}, (name, component, probe)
            assert isinstance(grpc["port"], int)
            assert set(container[probe]) & {"httpGet", "tcpSocket", "exec"} == set()


def test_long_startup_probe_for_model_loading(default: Manifest, autoscaled: Manifest) -> None:
    for manifest, component in ((default, "generator"), (default, "trainer"), (autoscaled, "reward")):
        startup = manifest.container(component)["startupProbe"]
        assert startup["failureThreshold"] == 120 and startup["periodSeconds"] == 10  # 20 minutes
    verifier = default.container("verifier")["startupProbe"]
    assert verifier["failureThreshold"] * verifier["periodSeconds"] < 1200


def test_controller_http_probes(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    container = manifest.container("controller")
    http_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    assert http_port == 8080
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}


def test_liveness_and_startup_success_threshold_is_one(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    for _, spec in manifest.pod_specs():
        for container in spec["containers"]:
            for probe in ("startupProbe", "livenessProbe"):
                if probe in container:
                    assert container[probe]["successThreshold"] == 1


def test_probes_can_be_switched_off() -> None:
    manifest = render(sets=("generator.livenessProbe.enabled=false", "controller.startupProbe.enabled=false"))
    assert "livenessProbe" not in manifest.container("generator")
    assert "startupProbe" in manifest.container("generator")
    assert "startupProbe" not in manifest.container("controller")
    assert manifest.container("controller")["readinessProbe"]["httpGet"]["path"] == "/readyz"


# ------------------------------------------------------------------------------------------------------- resources
def gpus(container: dict[str, Any]) -> tuple[Any, Any]:
    resources = container.get("resources", {})
    return resources.get("requests", {}).get(GPU), resources.get("limits", {}).get(GPU)


def test_gpu_limits_equal_requests_everywhere(scenario: tuple[str, Manifest]) -> None:
    name, manifest = scenario
    for obj, spec in manifest.pod_specs():
        for container in all_containers(spec):
            requested, limited = gpus(container)
            assert requested == limited, (name, obj, container["name"])


def test_default_gpu_layout(default: Manifest) -> None:
    assert gpus(default.container("generator")) == (1, 1)
    assert gpus(default.container("trainer")) == (1, 1)
    assert gpus(default.container("verifier")) == (None, None)
    assert gpus(default.container("controller")) == (None, None)


def test_production_gpu_layout(production: Manifest) -> None:
    # 4 nodes x 8 GPUs: one trainer node (8B fits it; docs/deploy.md, GPU budgets), 24 generators on the others
    assert production.workload("generator")["spec"]["replicas"] == 24
    assert gpus(production.container("generator")) == (1, 1)
    assert production.workload("trainer")["spec"]["replicas"] == 1
    assert gpus(production.container("trainer")) == (8, 8)
    trainer_env = env_of(production.container("trainer"))
    assert trainer_env["SEMIRL_GPUS_PER_POD"]["value"] == "8"
    assert trainer_env["SEMIRL_TRAINER_REPLICAS"]["value"] == "1"
    spec = production.workload("generator")["spec"]["template"]["spec"]
    assert spec["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["runtimeClassName"] == "nvidia"


def test_cpu_profile_has_no_gpu_anywhere(cpu: Manifest) -> None:
    assert GPU not in cpu.text
    for component in SERVICES:
        if cpu.has_workload(component):
            assert cpu.container(component)["image"] == "semirl/semirl-cpu-all:0.1.0"
    assert "SEMIRL_GENERATOR_MODEL" not in env_of(cpu.container("generator"))


def test_accelerator_resource_name_is_configurable() -> None:
    manifest = render(sets=("accelerator.resourceName=amd.com/gpu", "generator.gpus=2"))
    resources = manifest.container("generator")["resources"]
    assert resources["requests"]["amd.com/gpu"] == resources["limits"]["amd.com/gpu"] == 2
    assert GPU not in resources["requests"]


def test_every_container_has_a_memory_limit(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    for obj, spec in manifest.pod_specs():
        for container in all_containers(spec):
            assert container["resources"]["limits"]["memory"], (obj, container["name"])
            assert container["resources"]["requests"]["memory"], (obj, container["name"])


# ------------------------------------------------------------------------------------------------ security context
def test_restricted_security_context_on_every_container(scenario: tuple[str, Manifest]) -> None:
    name, manifest = scenario
    checked = 0
    for obj, spec in manifest.pod_specs():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}, obj
        for container in all_containers(spec):
            sc = container["securityContext"]
            where = (name, obj, container["name"])
            assert sc["runAsNonRoot"] is True, where
            # GPU containers: writable root filesystem for CDI-mode NVIDIA toolkits (test_gpu_cluster.py); the rest
            # (CPU components, init containers, everything in the CPU profile) read-only.
            gpu = GPU in (container.get("resources") or {}).get("limits", {})
            assert sc["readOnlyRootFilesystem"] is (not gpu), where
            assert sc["allowPrivilegeEscalation"] is False, where
            # the one capability a values file may add back: IPC_LOCK on the trainer (trainer.fabric.ipcLock, RDMA
            # memory registration pins pages)
            fabric = name.startswith("fabric-") and container["name"] == "trainer"
            wanted = {"drop": ["ALL"], "add": ["IPC_LOCK"]} if fabric else {"drop": ["ALL"]}
            assert sc["capabilities"] == wanted, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert sc.get("privileged", False) is False, where
            checked += 1
    assert checked >= 6


def test_init_containers_get_the_restricted_context(production: Manifest) -> None:
    spec = production.workload("generator")["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["name"] == "wait-for-model"
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_user_ids(default: Manifest) -> None:
    for component in SERVICES:
        if default.has_workload(component):
            pod = default.workload(component)["spec"]["template"]["spec"]["securityContext"]
            assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (10001, 10001, 10001)
    redis = default.workload("redis")["spec"]["template"]["spec"]["securityContext"]
    assert (redis["runAsUser"], redis["runAsGroup"], redis["fsGroup"]) == (999, 999, 999)
    test_pod = default.kind("Pod")[0]["spec"]["securityContext"]
    assert test_pod["runAsUser"] == 10001


def test_component_security_context_merges_over_the_default() -> None:
    manifest = render(sets=("generator.containerSecurityContext.runAsUser=2000",))
    sc = manifest.container("generator")["securityContext"]
    assert sc["runAsUser"] == 2000 and sc["readOnlyRootFilesystem"] is False and sc["runAsNonRoot"] is True


def test_service_account_tokens_only_for_the_controller(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    for obj, spec in manifest.pod_specs():
        component = obj.removeprefix(f"{FULLNAME}-")
        assert spec["automountServiceAccountToken"] is (component == "controller"), obj
    for sa in manifest.kind("ServiceAccount"):
        component = sa["metadata"]["labels"]["app.kubernetes.io/component"]
        assert sa["automountServiceAccountToken"] is (component == "controller")
        assert sa["metadata"]["name"] == f"{FULLNAME}-{component}"


# --------------------------------------------------------------------------------------------------------- volumes
def test_tmp_emptydir_in_every_pod(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    for obj, spec in manifest.pod_specs():
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}, obj
        for container in spec["containers"]:
            assert mounts_of(container)["/tmp"]["name"] == "tmp", obj


@pytest.mark.parametrize(("component", "size"), [("generator", "16Gi"), ("trainer", "32Gi")])
def test_memory_backed_shm(default: Manifest, component: str, size: str) -> None:
    shm = volumes_of(default.workload(component))["shm"]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": size}
    assert mounts_of(default.container(component))["/dev/shm"]["name"] == "shm"


@pytest.mark.parametrize("component", ["controller", "verifier"])
def test_no_shm_where_not_needed(default: Manifest, component: str) -> None:
    assert "shm" not in volumes_of(default.workload(component))
    assert "/dev/shm" not in mounts_of(default.container(component))


def checkpoint_mount(manifest: Manifest, component: str) -> dict[str, Any] | None:
    return mounts_of(manifest.container(component)).get("/checkpoints")


def test_checkpoint_mounts(scenario: tuple[str, Manifest]) -> None:
    name, manifest = scenario
    for component in ("trainer", "controller"):
        mount = checkpoint_mount(manifest, component)
        assert mount is not None and not mount.get("readOnly", False), (name, component)
        assert not volumes_of(manifest.workload(component))["checkpoints"]["persistentVolumeClaim"].get("readOnly")
    readonly = ["generator"] + (["reward"] if manifest.has_workload("reward") else [])
    for component in readonly:
        mount = checkpoint_mount(manifest, component)
        assert mount is not None and mount["readOnly"] is True, (name, component)
        assert volumes_of(manifest.workload(component))["checkpoints"]["persistentVolumeClaim"]["readOnly"] is True
    assert checkpoint_mount(manifest, "verifier") is None
    assert "checkpoints" not in volumes_of(manifest.workload("verifier"))


def test_reward_mounts_checkpoints_read_only(autoscaled: Manifest) -> None:
    assert autoscaled.has_workload("reward")
    assert checkpoint_mount(autoscaled, "reward")["readOnly"] is True


# ------------------------------------------------------------------------------------------------------------- env
def test_redis_password_is_declared_before_the_url(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    for component in enabled_services(manifest):
        names = [e["name"] for e in manifest.container(component)["env"]]
        assert names.index("SEMIRL_REDIS_PASSWORD") < names.index("SEMIRL_REDIS_URL"), component
        env = env_of(manifest.container(component))
        assert env["SEMIRL_REDIS_URL"]["value"] == f"redis://:$(SEMIRL_REDIS_PASSWORD)@{FULLNAME}-redis:6379/0"
        assert env["SEMIRL_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": f"{FULLNAME}-redis", "key": "redis-password"}


def test_common_env(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    for component in enabled_services(manifest):
        container = manifest.container(component)
        env = env_of(container)
        names = [e["name"] for e in container["env"]]
        assert len(names) == len(set(names)), f"duplicate env names in {component}"
        assert env["SEMIRL_GRPC_PORT"]["value"] == "50051"
        assert env["SEMIRL_METRICS_PORT"]["value"] == "9090"
        assert env["SEMIRL_LOG_LEVEL"]["value"] == "INFO"
        assert env["HOME"]["value"] == env["TMPDIR"]["value"] == "/tmp"


def test_controller_env(default: Manifest, autoscaled: Manifest) -> None:
    env = env_of(default.container("controller"))
    assert env["SEMIRL_STORE"]["value"] == "/checkpoints"
    assert env["SEMIRL_CONTROLLER_HOST"]["value"] == "0.0.0.0"
    assert env["SEMIRL_CONTROLLER_PORT"]["value"] == "8080"
    assert env["SEMIRL_DISCOVERY"]["value"] == "kubernetes"
    assert env["SEMIRL_K8S_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["SEMIRL_K8S_SERVICES"]["value"] == (
        f"generator={FULLNAME}-generator,verifier={FULLNAME}-verifier,trainer={FULLNAME}-trainer")
    # The pods informer's selector must select exactly this release's pods (what every workload labels them).
    selector = dict(term.split("=") for term in env["SEMIRL_K8S_POD_SELECTOR"]["value"].split(","))
    for component in ("controller", "generator", "verifier", "trainer"):
        labels = default.workload(component)["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items() and "app.kubernetes.io/component" in labels
    assert env["SEMIRL_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": f"{FULLNAME}-api-token", "key": "api-token"}
    with_reward = env_of(autoscaled.container("controller"))["SEMIRL_K8S_SERVICES"]["value"]
    assert with_reward.endswith(f",reward={FULLNAME}-reward")


def test_generator_env(default: Manifest, production: Manifest) -> None:
    env = env_of(default.container("generator"))
    assert env["SEMIRL_GENERATOR_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["SEMIRL_ADVERTISE_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["SEMIRL_GENERATOR_DTYPE"]["value"] == "bfloat16"
    assert env["SEMIRL_MAX_MODEL_LEN"]["value"] == "4096"
    assert env["SEMIRL_GENERATOR_BATCH"]["value"] == "64"
    assert "SEMIRL_GENERATOR_MODEL" not in env
    prod = env_of(production.container("generator"))
    assert prod["SEMIRL_GENERATOR_MODEL"]["value"] == "/checkpoints/models/Llama-3.1-8B-Instruct"
    assert prod["VLLM_LOGGING_LEVEL"]["value"] == "WARNING"


def test_verifier_env(default: Manifest) -> None:
    env = env_of(default.container("verifier"))
    assert env["SEMIRL_VERIFIER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_trainer_distributed_identity(default: Manifest) -> None:
    sts = default.workload("trainer")
    assert sts["kind"] == "StatefulSet"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["serviceName"] == f"{FULLNAME}-trainer-headless"
    env = env_of(default.container("trainer"))
    assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert env["MASTER_ADDR"]["value"] == (
        f"{FULLNAME}-trainer-0.{FULLNAME}-trainer-headless.{NAMESPACE}.svc.cluster.local")
    assert env["MASTER_PORT"]["value"] == "29500"
    assert env["SEMIRL_TRAINER_REPLICAS"]["value"] == "1"
    assert env["SEMIRL_GPUS_PER_POD"]["value"] == "1"
    assert env["SEMIRL_STORE"]["value"] == "/checkpoints"
    assert env["SEMIRL_CONTROLLER_GRPC"]["value"] == f"{FULLNAME}-controller:50051"
    assert env["SEMIRL_TRAINER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    headless = default.get("Service", f"{FULLNAME}-trainer-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["name"] for p in headless["spec"]["ports"]} == {"grpc", "dist"}


def test_trainer_replicas_and_cluster_domain() -> None:
    manifest = render(sets=("trainer.replicaCount=4", "global.clusterDomain=k8s.example"))
    sts = manifest.workload("trainer")
    assert sts["spec"]["replicas"] == 4
    env = env_of(manifest.container("trainer"))
    assert env["SEMIRL_TRAINER_REPLICAS"]["value"] == "4"
    assert env["MASTER_ADDR"]["value"].endswith(".svc.k8s.example")
    assert not manifest.kind("PodDisruptionBudget")  # no PDB for the trainer by default, even with 4 ranks


def test_user_env_replaces_a_chart_variable_in_place() -> None:
    manifest = render(sets=("generator.env[0].name=SEMIRL_LOG_LEVEL", "generator.env[0].value=DEBUG",
                            "generator.env[1].name=EXTRA", "generator.env[1].value=x"))
    container = manifest.container("generator")
    names = [e["name"] for e in container["env"]]
    assert names.count("SEMIRL_LOG_LEVEL") == 1
    assert names.index("SEMIRL_LOG_LEVEL") < names.index("HOME")  # kept at the chart's position
    assert names[-1] == "EXTRA"
    assert env_of(container)["SEMIRL_LOG_LEVEL"]["value"] == "DEBUG"


def test_commands(default: Manifest, autoscaled: Manifest) -> None:
    package = Path(__file__).resolve().parents[2] / "services" / "semirl"
    for component in SERVICES:
        manifest = default if default.has_workload(component) else autoscaled  # reward is off by default
        command = manifest.container(component)["command"]
        assert command == ["python", "-m", f"semirl.{component}"]
        module = command[2].removeprefix("semirl.")
        assert (package / module / "__main__.py").is_file(), f"{component}: no entry module {command[2]}"
    manifest = render(sets=("verifier.args[0]=--timeout=5", "verifier.extraArgs[0]=--verbose"))
    assert manifest.container("verifier")["args"] == ["--timeout=5", "--verbose"]


def test_controller_is_a_single_recreated_replica(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    deployment = manifest.workload("controller")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


# ---------------------------------------------------------------------------------------------------------- images
def test_image_references(default: Manifest, production: Manifest) -> None:
    assert default.container("generator")["image"] == "semirl/semirl-generator:0.1.0"
    assert default.container("controller")["image"] == "semirl/semirl-cpu:0.1.0"
    assert default.container("verifier")["image"] == "semirl/semirl-cpu:0.1.0"
    assert default.container("trainer")["image"] == "semirl/semirl-trainer:0.1.0"
    assert production.container("generator")["image"] == "registry.example.com/ml/semirl/semirl-generator:0.1.0"
    assert production.container("redis")["image"] == "registry.example.com/ml/redis:7.4.2-bookworm"
    pod = production.workload("trainer")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "ml-registry"}]


def test_image_digest_and_skaffold_style_tags() -> None:
    digest = "sha256:" + "a" * 64
    manifest = render(sets=(f"generator.image.digest={digest}", "generator.image.registry=r.example",
                            f"trainer.image.tag=abc123@{digest}", "verifier.image.tag=abc123@"))
    assert manifest.container("generator")["image"] == f"r.example/semirl/semirl-generator@{digest}"
    assert manifest.container("trainer")["image"] == f"semirl/semirl-trainer:abc123@{digest}"
    assert manifest.container("verifier")["image"] == "semirl/semirl-cpu:abc123"


# ----------------------------------------------------------------------------------------------------------- redis
def test_redis_statefulset(default: Manifest) -> None:
    sts = default.workload("redis")
    assert sts["kind"] == "StatefulSet"
    container = default.container("redis")
    image = container["image"]
    assert image.startswith("redis:7.") and not image.endswith(":latest")
    assert container["command"] == ["redis-server"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert container["readinessProbe"]["exec"]["command"] == ["redis-cli", "-p", "6379", "ping"]
    assert container["livenessProbe"]["tcpSocket"] == {"port": 6379}
    assert env_of(container)["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"]["name"] == f"{FULLNAME}-redis"
    assert mounts_of(container)["/data"]["name"] == "data"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    secret = default.get("Secret", f"{FULLNAME}-redis")
    assert set(secret["data"]) == {"redis-password"}


def test_redis_without_auth() -> None:
    manifest = render(sets=("redis.auth.enabled=false",))
    assert manifest.find("Secret", f"{FULLNAME}-redis") is None
    assert "--requirepass" not in manifest.container("redis")["args"]
    env = env_of(manifest.container("generator"))
    assert "SEMIRL_REDIS_PASSWORD" not in env
    assert env["SEMIRL_REDIS_URL"]["value"] == f"redis://{FULLNAME}-redis:6379/0"


def test_external_redis() -> None:
    manifest = render(sets=("redis.enabled=false", "externalRedis.host=redis.db.internal", "externalRedis.port=6380",
                            "externalRedis.existingSecret=managed-redis", "externalRedis.existingSecretPasswordKey=pw"))
    assert not manifest.has_workload("redis")
    assert manifest.find("Service", f"{FULLNAME}-redis") is None
    assert not [np for np in manifest.kind("NetworkPolicy") if np["metadata"]["name"].endswith("-redis")]
    env = env_of(manifest.container("verifier"))
    assert env["SEMIRL_REDIS_URL"]["value"] == "redis://:$(SEMIRL_REDIS_PASSWORD)@redis.db.internal:6380/0"
    assert env["SEMIRL_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "managed-redis", "key": "pw"}


def test_redis_existing_secret() -> None:
    manifest = render(sets=("redis.auth.existingSecret=my-redis", "redis.auth.existingSecretPasswordKey=password"))
    assert manifest.find("Secret", f"{FULLNAME}-redis") is None
    ref = env_of(manifest.container("trainer"))["SEMIRL_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "my-redis", "key": "password"}


# ---------------------------------------------------------------------------------------------------- API token
def test_api_token_secret(default: Manifest) -> None:
    secret = default.get("Secret", f"{FULLNAME}-api-token")
    assert set(secret["data"]) == {"api-token"}
    assert len(secret["data"]["api-token"]) >= 48


def test_api_token_existing_secret() -> None:
    manifest = render(sets=("controller.auth.existingSecret=tokens", "controller.auth.existingSecretKey=semirl"))
    assert manifest.find("Secret", f"{FULLNAME}-api-token") is None
    ref = env_of(manifest.container("controller"))["SEMIRL_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "tokens", "key": "semirl"}


def test_random_secrets_are_preserved_across_upgrades() -> None:
    from chartlib import CHART

    for path in ("templates/controller/secret.yaml", "templates/redis/secret.yaml"):
        text = (CHART / path).read_text()
        assert 'lookup "v1" "Secret" .Release.Namespace' in text, path


# ----------------------------------------------------------------------------------------------------- helm test
def test_helm_test_pod(scenario: tuple[str, Manifest]) -> None:
    _, manifest = scenario
    (pod,) = manifest.kind("Pod")
    annotations = pod["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "test"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == manifest.container("controller")["image"]
    command = container["command"] + container["args"]
    assert command[:3] == ["python", "-m", "semirl.healthcheck"]
    assert command[command.index("--http") + 1] == f"http://{FULLNAME}-controller:8080/readyz"
    targets = [command[i + 1] for i, arg in enumerate(command) if arg == "--grpc"]
    assert targets == [f"{FULLNAME}-{c}:50051" for c in enabled_services(manifest)]
    assert command[command.index("--service") + 1] == "readiness"
    assert pod["spec"]["restartPolicy"] == "Never"


def test_every_semirl_variable_the_chart_sets_is_read_by_the_services(
    default: Manifest, autoscaled: Manifest
) -> None:
    """The chart and the services spell the settings in two places; a renamed variable would be silently ignored."""
    package = Path(__file__).resolve().parents[2] / "services" / "semirl"
    sources = "\n".join(p.read_text() for p in package.rglob("*.py") if "deploy" not in p.parts)
    names = set()
    for manifest in (default, autoscaled):
        for component in SERVICES:
            if manifest.has_workload(component):
                names |= {n for n in env_of(manifest.container(component)) if n.startswith("SEMIRL_")}
    names -= {"SEMIRL_REDIS_PASSWORD"}  # only expanded into SEMIRL_REDIS_URL
    assert {n for n in names if n.startswith("SEMIRL_REWARD_")} >= {"SEMIRL_REWARD_MODEL", "SEMIRL_REWARD_SCORE_TOKEN"}
    assert names and {n for n in names if f'"{n}"' not in sources} == set()
