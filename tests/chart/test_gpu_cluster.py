"""What a real GPU cluster needs from the chart (issue 13): the driver gate, root filesystems writable for CDI-mode
toolkits, vLLM settings from values, the reload timeout, the multi-GPU trainer's rank arithmetic and the optional
model-staging Job. Rendered from the GPU values files (ci/gpu-values.yaml, ci/gpu-production-values.yaml)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chartlib import FULLNAME, NAMESPACE, Manifest, env_of, mounts_of, render, render_error

from semirl.trainer.launcher import rank_environment
from semirl.trainer.topology import topology_from_env

GPU = "nvidia.com/gpu"
DRIVER_LABEL = "nvidia.com/cuda.driver-version.major"
GPU_COMPONENTS = ("generator", "trainer")
DRIVER_GATE = {"key": DRIVER_LABEL, "operator": "Gt", "values": ["579"]}


def pod_spec(manifest: Manifest, component: str) -> dict[str, Any]:
    return manifest.workload(component)["spec"]["template"]["spec"]


def required_terms(manifest: Manifest, component: str) -> list[dict[str, Any]]:
    affinity = pod_spec(manifest, component).get("affinity", {})
    return affinity.get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", {}).get(
        "nodeSelectorTerms", [])


# ------------------------------------------------------------------------------------------------ 1. driver >= 580
@pytest.mark.parametrize("scenario_name", ["default", "gpu", "gpu-production"])
def test_gpu_pods_only_on_nodes_with_driver_580(rendered: dict[str, Manifest], scenario_name: str) -> None:
    manifest = rendered[scenario_name]
    for component in GPU_COMPONENTS:
        terms = required_terms(manifest, component)
        assert terms, (scenario_name, component)
        for term in terms:   # terms are ORed: the gate must be in every one
            assert DRIVER_GATE in term["matchExpressions"], (scenario_name, component, term)
    for component in ("controller", "verifier"):
        assert not required_terms(manifest, component)


def test_cpu_profile_has_no_driver_gate(cpu: Manifest) -> None:
    assert DRIVER_LABEL not in cpu.text


def test_driver_gate_is_anded_into_the_users_affinity() -> None:
    base = "trainer.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"
    manifest = render(sets=(
        f"{base}[0].matchExpressions[0].key=pool", f"{base}[0].matchExpressions[0].operator=In",
        f"{base}[0].matchExpressions[0].values[0]=a", f"{base}[1].matchExpressions[0].key=pool",
        f"{base}[1].matchExpressions[0].operator=In", f"{base}[1].matchExpressions[0].values[0]=b",
        "trainer.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=1",
        "trainer.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm"
        ".topologyKey=kubernetes.io/hostname",
    ))
    terms = required_terms(manifest, "trainer")
    assert [t["matchExpressions"][0]["values"] for t in terms] == [["a"], ["b"]]
    assert all(t["matchExpressions"][1] == DRIVER_GATE for t in terms)
    assert "podAntiAffinity" in pod_spec(manifest, "trainer")["affinity"]


def test_driver_gate_label_and_version_are_values() -> None:
    manifest = render(sets=("accelerator.driverGate.nodeLabel=example.com/driver-major",
                            "accelerator.driverGate.minMajor=575"))
    (term,) = required_terms(manifest, "generator")
    assert term["matchExpressions"] == [{"key": "example.com/driver-major", "operator": "Gt", "values": ["574"]}]
    off = render(sets=("accelerator.driverGate.enabled=false",))
    assert "affinity" not in pod_spec(off, "generator")


# ------------------------------------------------------------------------------- 3. CDI toolkits, read-only rootfs
def test_gpu_containers_have_a_writable_root_filesystem(default: Manifest, gpu: Manifest) -> None:
    for manifest in (default, gpu):
        for component in GPU_COMPONENTS:
            sc = manifest.container(component)["securityContext"]
            assert sc["readOnlyRootFilesystem"] is False, component
            assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
        for component in ("controller", "verifier", "redis"):
            assert manifest.container(component)["securityContext"]["readOnlyRootFilesystem"] is True


def test_read_only_root_filesystem_is_switchable() -> None:
    manifest = render(sets=("generator.containerSecurityContext.readOnlyRootFilesystem=true",))
    assert manifest.container("generator")["securityContext"]["readOnlyRootFilesystem"] is True
    assert manifest.container("trainer")["securityContext"]["readOnlyRootFilesystem"] is False


# ----------------------------------------------------------------------------------------------- 7. vLLM settings
def vllm_env(manifest: Manifest) -> dict[str, str]:
    env = env_of(manifest.container("generator"))
    return {name: item["value"] for name, item in env.items() if name.startswith("SEMIRL_VLLM_")}


def test_gpu_values_reach_the_generator(gpu: Manifest, production: Manifest) -> None:
    assert vllm_env(gpu) == {
        "SEMIRL_VLLM_TENSOR_PARALLEL_SIZE": "1", "SEMIRL_VLLM_ENFORCE_EAGER": "false",
        "SEMIRL_VLLM_GPU_MEMORY_UTILIZATION": "0.9", "SEMIRL_VLLM_MAX_NUM_SEQS": "512",
        "SEMIRL_VLLM_ENABLE_PREFIX_CACHING": "true",
    }
    assert env_of(gpu.container("generator"))["SEMIRL_GENERATOR_DTYPE"]["value"] == "bfloat16"
    prod = vllm_env(production)
    assert prod["SEMIRL_VLLM_GPU_MEMORY_UTILIZATION"] == "0.92" and prod["SEMIRL_VLLM_ENFORCE_EAGER"] == "false"
    assert prod["SEMIRL_VLLM_MAX_NUM_SEQS"] == "512"


def test_cpu_stack_runs_vllm_eagerly(cpu: Manifest, default: Manifest) -> None:
    assert vllm_env(cpu)["SEMIRL_VLLM_ENFORCE_EAGER"] == "true"
    assert vllm_env(cpu)["SEMIRL_VLLM_TENSOR_PARALLEL_SIZE"] == "1"     # no GPU: one engine, no tensor parallel
    assert vllm_env(default)["SEMIRL_VLLM_ENFORCE_EAGER"] == "false"
    assert "SEMIRL_VLLM_MAX_NUM_SEQS" not in vllm_env(default)         # null: vLLM's own default


@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
def test_tensor_parallel_size_is_the_pods_gpus(gpus: int) -> None:
    manifest = render(values=("gpu-values.yaml",), sets=(f"generator.gpus={gpus}",))
    resources = manifest.container("generator")["resources"]
    assert resources["requests"][GPU] == resources["limits"][GPU] == gpus
    assert vllm_env(manifest)["SEMIRL_VLLM_TENSOR_PARALLEL_SIZE"] == str(gpus)


def test_engine_args_pass_through_as_json() -> None:
    manifest = render(sets=("generator.vllm.engineArgs.kv_cache_dtype=fp8", "generator.vllm.engineArgs.seed=3"))
    assert json.loads(vllm_env(manifest)["SEMIRL_VLLM_ENGINE_ARGS"]) == {"kv_cache_dtype": "fp8", "seed": 3}


# ---------------------------------------------------------------------------------------------- 8. reload timeout
def test_reload_timeout_reaches_the_controller(default: Manifest, gpu: Manifest) -> None:
    for manifest in (default, gpu):
        assert env_of(manifest.container("controller"))["SEMIRL_RELOAD_TIMEOUT_S"]["value"] == "600"
    manifest = render(sets=("controller.reloadTimeoutSeconds=1200",))
    assert env_of(manifest.container("controller"))["SEMIRL_RELOAD_TIMEOUT_S"]["value"] == "1200"


def test_weight_transfer_port_and_deadline_reach_trainer_and_controller(default: Manifest) -> None:
    """The trainer's rank 0 hosts the in-memory sync's rendezvous on trainer.transfer.port (a named container
    port); the controller's plans carry controller.transferTimeoutSeconds."""
    trainer = default.container("trainer")
    assert env_of(trainer)["SEMIRL_TRANSFER_PORT"]["value"] == "50055"
    assert {"name": "transfer", "containerPort": 50055, "protocol": "TCP"} in trainer["ports"]
    assert env_of(default.container("controller"))["SEMIRL_TRANSFER_TIMEOUT_S"]["value"] == "120"
    manifest = render(sets=("trainer.transfer.port=50100", "controller.transferTimeoutSeconds=30"))
    assert env_of(manifest.container("trainer"))["SEMIRL_TRANSFER_PORT"]["value"] == "50100"
    assert env_of(manifest.container("controller"))["SEMIRL_TRANSFER_TIMEOUT_S"]["value"] == "30"


# ------------------------------------------------------------------------------------------- 9. multi-GPU trainer
def test_two_pods_of_eight_gpus_make_one_sixteen_rank_job() -> None:
    manifest = render(sets=("trainer.replicaCount=2", "trainer.gpus=8"))
    sts = manifest.workload("trainer")
    assert sts["spec"]["replicas"] == 2 and sts["spec"]["podManagementPolicy"] == "Parallel"
    container = manifest.container("trainer")
    assert container["command"] == ["python", "-m", "semirl.trainer"]    # the launcher: one process per GPU
    assert container["resources"]["requests"][GPU] == container["resources"]["limits"][GPU] == 8
    env = env_of(container)
    assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    headless = f"{FULLNAME}-trainer-headless"
    assert sts["spec"]["serviceName"] == headless
    assert env["MASTER_ADDR"]["value"] == f"{FULLNAME}-trainer-0.{headless}.{NAMESPACE}.svc.cluster.local"
    assert "SEMIRL_TRAINER_LOCAL_RANKS" not in env                       # GPUs decide the ranks per pod

    # What each pod's launcher computes from that environment (the pod index filled in as the kubelet does).
    literal = {name: item["value"] for name, item in env.items() if "value" in item}
    ranks: list[int] = []
    for pod_index in range(2):
        pod_env = {**literal, "NODE_RANK": str(pod_index)}
        topology = topology_from_env(pod_env, hostname=f"{FULLNAME}-trainer-{pod_index}")
        assert (topology.nodes, topology.ranks_per_node, topology.world_size) == (2, 8, 16)
        for local_rank in range(topology.ranks_per_node):
            rank_env = rank_environment(topology, local_rank)
            assert rank_env["WORLD_SIZE"] == "16" and rank_env["LOCAL_WORLD_SIZE"] == "8"
            assert rank_env["LOCAL_RANK"] == str(local_rank)
            assert rank_env["MASTER_ADDR"] == env["MASTER_ADDR"]["value"]
            assert rank_env["MASTER_PORT"] == env["MASTER_PORT"]["value"] == "29500"
            ranks.append(int(rank_env["RANK"]))
    assert ranks == list(range(16))            # every global rank exactly once; pod 1 holds ranks 8-15

    # the ranks reach each other on any port (NCCL, gloo), and the pods resolve before they are ready
    policy = manifest.get("NetworkPolicy", f"{FULLNAME}-trainer")
    selector = sts["spec"]["selector"]["matchLabels"]
    assert any(rule.get("from") == [{"podSelector": {"matchLabels": selector}}] and "ports" not in rule
               for rule in policy["spec"]["ingress"])
    assert manifest.get("Service", headless)["spec"]["publishNotReadyAddresses"] is True


# --------------------------------------------------------------------------------------------- 4. model staging Job
def staging_job(manifest: Manifest) -> dict[str, Any]:
    (job,) = [j for j in manifest.kind("Job") if "-stage-model-" in j["metadata"]["name"]]
    return job


def test_model_staging_is_off_by_default(default: Manifest) -> None:
    assert not default.kind("Job")


def test_model_staging_job(gpu: Manifest) -> None:
    job = staging_job(gpu)
    assert job["metadata"]["name"] == f"{FULLNAME}-stage-model-1"       # the revision: a new Job per upgrade
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["checkpoints"]["persistentVolumeClaim"] == {"claimName": f"{FULLNAME}-checkpoints"}

    (init,) = spec["initContainers"]                                   # the one root container of the chart
    assert init["name"] == "fix-ownership"
    sc = init["securityContext"]
    assert sc["runAsUser"] == 0 and sc["runAsNonRoot"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER"]}
    assert sc["readOnlyRootFilesystem"] is True
    script = init["args"][0]
    assert 'chown 10001:10001 "$dir"' in script
    assert {e["name"]: e["value"] for e in init["env"]} == {
        "STORE": "/checkpoints", "TARGET": "/checkpoints/models/Llama-3.1-8B-Instruct"}

    (download,) = spec["containers"]
    assert download["image"] == gpu.container("generator")["image"]     # the generator's image has huggingface_hub
    dsc = download["securityContext"]
    assert dsc["runAsNonRoot"] is True and dsc["readOnlyRootFilesystem"] is True and "runAsUser" not in dsc
    env = env_of(download)
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert env["STAGE_REPO"]["value"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert json.loads(env["STAGE_IGNORE"]["value"]) == ["original/*"]
    assert env["STAGE_TARGET"]["value"] == "/checkpoints/models/Llama-3.1-8B-Instruct"
    assert "snapshot_download(" in download["args"][0] and ".semirl-staged" in download["args"][0]
    assert not mounts_of(download)["/checkpoints"].get("readOnly")
    assert mounts_of(download)["/tmp"]["name"] == "tmp"


def test_model_staging_without_token_or_chown() -> None:
    manifest = render(sets=("modelStaging.enabled=true", "modelStaging.fixOwnership=false",
                            "modelStaging.repo=org/public-model", "modelStaging.path=models/public"))
    spec = staging_job(manifest)["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    env = env_of(spec["containers"][0])
    assert "HF_TOKEN" not in env and env["STAGE_TARGET"]["value"] == "/checkpoints/models/public"


def test_model_staging_needs_the_checkpoint_store() -> None:
    error = render_error(sets=("modelStaging.enabled=true", "checkpoints.enabled=false", "controller.enabled=false",
                               "trainer.enabled=false"))
    assert "modelStaging.enabled" in error


def test_production_generators_wait_for_the_complete_download(production: Manifest) -> None:
    (init,) = pod_spec(production, "generator")["initContainers"]
    assert ".semirl-staged" in init["args"][0]
    assert env_of(init)["STAGED_MODEL"]["value"] == "/checkpoints/models/Llama-3.1-8B-Instruct"
    assert init["image"] == production.container("generator")["image"]  # its own image, no registry written in
    env = env_of(staging_job(production)["spec"]["template"]["spec"]["containers"][0])
    assert env["STAGE_TARGET"]["value"] == "/checkpoints/models/Llama-3.1-8B-Instruct"
