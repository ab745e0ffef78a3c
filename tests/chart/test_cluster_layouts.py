"""The 8B cluster path (issue 22): GPU budgets that add up on the clusters the values files name, the multi-node
fabric settings, priority classes and gang scheduling, persistent compile caches, tolerations for GPU-only
clusters, reward-model staging and the data-preparation Job, whose rendered commands are then run here on local
files (the same `python -m semirl.data` the Job's containers run, with the claim's mount path mapped to a folder)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import FULLNAME, Manifest, env_of, mounts_of, render, volumes_of

GPU = "nvidia.com/gpu"
NODE_GPUS = 8
# values files -> the cluster they are written for (nodes x 8 GPUs): every GPU used, none asked for twice
LAYOUTS = {"gpu-8b-1node": 1, "gpu-production": 4}


def _gpus(workload: dict[str, Any]) -> int:
    containers = workload["spec"]["template"]["spec"]["containers"]
    return sum(int(c.get("resources", {}).get("limits", {}).get(GPU, 0)) for c in containers)


def _pod(manifest: Manifest, component: str) -> dict[str, Any]:
    return manifest.workload(component)["spec"]["template"]["spec"]


@pytest.mark.parametrize("scenario_name", sorted(LAYOUTS))
def test_gpu_budget_fits_the_cluster_it_is_written_for(rendered: dict[str, Manifest], scenario_name: str) -> None:
    manifest = rendered[scenario_name]
    total = 0
    for workload in manifest.workloads():
        per_pod = _gpus(workload)
        assert per_pod <= NODE_GPUS, (workload["metadata"]["name"], per_pod)
        total += per_pod * int(workload["spec"].get("replicas", 1))
    assert total == LAYOUTS[scenario_name] * NODE_GPUS, (scenario_name, total)
    trainer = manifest.workload("trainer")
    assert trainer["spec"]["replicas"] == 1  # 8B: one trainer node, NVLink only (docs/deploy.md, GPU budgets)


@pytest.mark.parametrize("scenario_name", ["fabric-infiniband", "fabric-roce"])
def test_fabric_presets_reach_the_trainer(rendered: dict[str, Manifest], scenario_name: str) -> None:
    manifest = rendered[scenario_name]
    container = manifest.container("trainer")
    resources = container["resources"]
    rdma = {k: v for k, v in resources["limits"].items() if "rdma" in k}
    assert rdma and rdma == {k: v for k, v in resources["requests"].items() if "rdma" in k}
    assert "IPC_LOCK" in container["securityContext"]["capabilities"]["add"]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    env = env_of(container)
    assert env["NCCL_SOCKET_IFNAME"]["value"] == env["GLOO_SOCKET_IFNAME"]["value"] == "eth0"
    assert env["NCCL_IB_HCA"]["value"] == "mlx5"
    assert manifest.workload("trainer")["spec"]["replicas"] * _gpus(manifest.workload("trainer")) == 32
    annotations = manifest.workload("trainer")["spec"]["template"]["metadata"].get("annotations", {})
    if scenario_name == "fabric-roce":
        assert annotations["k8s.v1.cni.cncf.io/networks"].count("roce-rail-") == 8
        assert env["NCCL_IB_GID_INDEX"]["value"] == "3"
    # nothing of it leaks into the generators
    assert "IPC_LOCK" not in json.dumps(manifest.container("generator")["securityContext"])


def test_host_network_kueue_and_no_fabric_by_default(default: Manifest) -> None:
    assert "IPC_LOCK" not in default.text and "rdma" not in json.dumps(default.container("trainer")["resources"])
    assert "hostNetwork" not in _pod(default, "trainer")
    manifest = render(sets=("trainer.fabric.hostNetwork=true", "trainer.kueue.queueName=gpu-queue"))
    pod = _pod(manifest, "trainer")
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    trainer = manifest.workload("trainer")
    assert trainer["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert trainer["spec"]["template"]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"


def test_priority_classes_are_made_and_used(production: Manifest, default: Manifest) -> None:
    assert not default.kind("PriorityClass")
    classes = {p["metadata"]["name"]: p for p in production.kind("PriorityClass")}
    assert set(classes) == {f"{FULLNAME}-critical", f"{FULLNAME}-workers"}
    assert classes[f"{FULLNAME}-critical"]["value"] > classes[f"{FULLNAME}-workers"]["value"]
    for component, tier in {"trainer": "critical", "controller": "critical", "redis": "critical",
                            "generator": "workers", "verifier": "workers"}.items():
        assert _pod(production, component)["priorityClassName"] == f"{FULLNAME}-{tier}", component
    own = render(sets=("priorityClasses.create=true", "trainer.priorityClassName=site-training"))
    assert _pod(own, "trainer")["priorityClassName"] == "site-training"


def test_compile_cache_survives_generator_restarts(production: Manifest, default: Manifest) -> None:
    assert "VLLM_CACHE_ROOT" not in default.text
    claim = production.get("PersistentVolumeClaim", f"{FULLNAME}-compile-cache")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and claim["spec"]["resources"]["requests"]["storage"]
    generator = production.workload("generator")
    assert volumes_of(generator)["compile-cache"]["persistentVolumeClaim"]["claimName"] == f"{FULLNAME}-compile-cache"
    mount = next(m for m in production.container("generator")["volumeMounts"] if m["name"] == "compile-cache")
    assert not mount.get("readOnly")
    env = env_of(production.container("generator"))
    for name in ("VLLM_CACHE_ROOT", "FLASHINFER_WORKSPACE_BASE", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        assert env[name]["value"].startswith(mount["mountPath"] + "/"), name
    existing = render(sets=("generator.compileCache.enabled=true", "generator.compileCache.existingClaim=mine"))
    assert not existing.find("PersistentVolumeClaim", f"{FULLNAME}-compile-cache")
    assert volumes_of(existing.workload("generator"))["compile-cache"]["persistentVolumeClaim"]["claimName"] == "mine"


def test_gpu_only_clusters_schedule_the_cpu_pods(rendered: dict[str, Manifest], default: Manifest) -> None:
    toleration = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
    assert toleration not in _pod(default, "controller").get("tolerations", [])
    manifest = rendered["gpu-8b-1node"]
    for component in ("controller", "verifier", "redis"):
        assert toleration in _pod(manifest, component)["tolerations"], component
    job = next(j for j in manifest.kind("Job") if "prepare-data" in j["metadata"]["name"])
    assert toleration in job["spec"]["template"]["spec"]["tolerations"]
    # a GPU pod keeps exactly one copy of it
    assert _pod(manifest, "generator")["tolerations"].count(toleration) == 1


def test_reward_model_staging_and_waiting() -> None:
    manifest = render(sets=("modelStaging.enabled=true", "modelStaging.rewardModel.repo=Nexusflow/Athene-RM-8B",
                            "reward.enabled=true", "reward.model=/checkpoints/models/Athene-RM-8B"))
    job = next(j for j in manifest.kind("Job") if "stage-model" in j["metadata"]["name"])
    containers = {c["name"]: c for c in job["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"download", "download-reward-model"}
    reward_env = env_of(containers["download-reward-model"])
    assert reward_env["STAGE_REPO"]["value"] == "Nexusflow/Athene-RM-8B"
    assert reward_env["STAGE_TARGET"]["value"] == "/checkpoints/models/Athene-RM-8B"
    (wait,) = _pod(manifest, "reward")["initContainers"]
    assert env_of(wait)["STAGED_MODEL"]["value"] == "/checkpoints/models/Athene-RM-8B"
    assert wait["image"] == manifest.container("reward")["image"]
    assert all(m.get("readOnly") for m in wait["volumeMounts"])
    without = render(sets=("modelStaging.enabled=true",))
    job = next(j for j in without.kind("Job") if "stage-model" in j["metadata"]["name"])
    assert [c["name"] for c in job["spec"]["template"]["spec"]["containers"]] == ["download"]


def _numinamath_rows() -> list[dict[str, str]]:
    return [
        {"problem": "What is $2+3$?", "solution": "It is $\\boxed{5}$."},
        {"problem": "What is $7 \\times 6$?", "solution": "So $\\boxed{42}$."},
        {"problem": "Prove that $1 = 1$.", "solution": "Trivial.", "question_type": "proof"},
        {"problem": "Compute $\\frac{1}{2}+\\frac{1}{2}$.", "solution": "$\\boxed{1}$"},  # also in MATH-500
    ]


def _math500_rows() -> list[dict[str, str]]:
    return [{"problem": "Compute $\\frac{1}{2}+\\frac{1}{2}$.", "answer": "1", "unique_id": "test/a/1.json"},
            {"problem": "What is $10-4$?", "answer": "6", "unique_id": "test/a/2.json"}]


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_data_preparation_job_runs_here(tmp_path: Path) -> None:
    """Render the Job for local inputs on the claim, then run its init containers' commands in order, exactly as
    rendered, with the claim's mount path pointing at a folder: the training set loses its proof and every
    evaluation problem."""
    claim = tmp_path / "claim"
    _write_jsonl(claim / "raw" / "math500.jsonl", _math500_rows())
    _write_jsonl(claim / "raw" / "numinamath.jsonl", _numinamath_rows())
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"checkpoints": {"mountPath": str(claim)}, "dataPreparation": {
        "enabled": True, "datasets": [
            {"source": "math500", "input": "raw/math500.jsonl", "split": "test", "out": "data/math500.jsonl"},
            {"source": "numinamath", "input": "raw/numinamath.jsonl", "out": "data/numinamath.jsonl",
             "exclude": ["data/math500.jsonl"]},
        ]}}))
    manifest = render(values=(str(values),))
    (job,) = [j for j in manifest.kind("Job") if "prepare-data" in j["metadata"]["name"]]
    inits = job["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in inits] == ["prepare-0-math500", "prepare-1-numinamath"]
    for container in inits:
        assert container["command"] == ["python", "-m", "semirl.data"]
        assert str(claim) in mounts_of(container)
        result = subprocess.run([sys.executable, *container["command"][1:], *container["args"]],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    evaluation = [json.loads(line) for line in (claim / "data" / "math500.jsonl").read_text().splitlines()]
    training = [json.loads(line) for line in (claim / "data" / "numinamath.jsonl").read_text().splitlines()]
    assert len(evaluation) == 2
    assert sorted(r["answer"] for r in training) == ["42", "5"]  # the proof and the MATH-500 problem are gone


def test_the_default_data_job_prepares_the_papers_sets() -> None:
    manifest = render(sets=("dataPreparation.enabled=true",))
    (job,) = [j for j in manifest.kind("Job") if "prepare-data" in j["metadata"]["name"]]
    inits = job["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in inits] == ["prepare-0-math500", "prepare-1-amc23", "prepare-2-numinamath"]
    train_args = inits[2]["args"]
    assert train_args[train_args.index("--input") + 1] == "hub:AI-MO/NuminaMath-CoT"
    excluded = [train_args[i + 1] for i, a in enumerate(train_args) if a == "--exclude"]
    assert excluded == ["/checkpoints/data/math500.jsonl", "/checkpoints/data/amc23.jsonl"]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == manifest.container("controller")["image"]


def test_run_tracking_settings_reach_the_controller(default: Manifest) -> None:
    assert "SEMIRL_MLFLOW" not in default.text and "SEMIRL_TRACKING_POLL_S" not in default.text
    manifest = render(sets=(
        "controller.tracking.mlflow.trackingUri=http://mlflow.mlflow:5000",
        "controller.tracking.wandb.mode=online", "controller.tracking.wandb.apiKey.existingSecret=wandb",
        "controller.tracking.artifacts.uri=s3://runs/semirl",
        "controller.tracking.artifacts.s3EndpointUrl=http://minio.minio:9000",
        "controller.tracking.artifacts.credentials.existingSecret=s3-keys",
    ))
    env = env_of(manifest.container("controller"))
    assert env["SEMIRL_MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.mlflow:5000"
    assert env["SEMIRL_MLFLOW_EXPERIMENT"]["value"] == "semirl"
    assert env["SEMIRL_WANDB_MODE"]["value"] == "online"
    assert env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "wandb", "key": "api-key"}
    assert env["SEMIRL_ARTIFACT_URI"]["value"] == "s3://runs/semirl"
    assert env["SEMIRL_S3_ENDPOINT_URL"]["value"] == "http://minio.minio:9000"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "s3-keys",
                                                                          "key": "secret-access-key"}
    assert env["SEMIRL_TRACKING_POLL_S"]["value"] == "10"
    # what the chart writes is what the controller reads
    from semirl.controller.tracking import TrackingSettings

    settings = TrackingSettings.from_env({k: v["value"] for k, v in env.items() if "value" in v})
    assert settings.mlflow_tracking_uri and settings.wandb_mode == "online" and settings.artifact_uri
