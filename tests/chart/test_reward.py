"""The reward-model service (`python -m semirl.reward`) behind reward.enabled: off by default; on, a GPU Deployment
reading its model from the read-only checkpoint claim, its settings as SEMIRL_REWARD_* env, and a KEDA ScaledObject
on the to_reward backlog. Enabling it without a model is refused."""

from __future__ import annotations

import pydantic
import pytest
from chartlib import FULLNAME, KEDA_API, Manifest, env_of, mounts_of, render, render_error, volumes_of

from semirl.core import keys
from semirl.deploy.values import ChartValues

GPU = "nvidia.com/gpu"
ATHENE = "/checkpoints/models/Athene-RM-8B"
SCORE_TOKEN = "<|reserved_special_token_1|>"
ENABLED = ("reward.enabled=true", f"reward.model={ATHENE}", f"reward.scoreToken={SCORE_TOKEN}")


@pytest.fixture(scope="module")
def reward() -> Manifest:
    return render(sets=ENABLED)


def test_off_by_default(default: Manifest, production: Manifest, cpu: Manifest) -> None:
    for manifest in (default, production, cpu):
        assert not manifest.has_workload("reward")
        assert manifest.find("Deployment", f"{FULLNAME}-reward") is None
        assert manifest.find("Service", f"{FULLNAME}-reward") is None


def test_enabled_runs_the_reward_module_on_a_gpu(reward: Manifest) -> None:
    deployment = reward.get("Deployment", f"{FULLNAME}-reward")
    assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "reward"
    container = reward.container("reward")
    assert container["command"] == ["python", "-m", "semirl.reward"]
    assert container["image"] == "semirl/semirl-reward:0.1.0"
    resources = container["resources"]
    assert resources["requests"][GPU] == resources["limits"][GPU] == 1
    spec = deployment["spec"]["template"]["spec"]
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert reward.find("Service", f"{FULLNAME}-reward") is not None


def test_enabled_mounts_the_checkpoint_store_read_only(reward: Manifest) -> None:
    mount = mounts_of(reward.container("reward"))["/checkpoints"]
    assert mount["name"] == "checkpoints" and mount["readOnly"] is True
    claim = volumes_of(reward.workload("reward"))["checkpoints"]["persistentVolumeClaim"]
    assert claim == {"claimName": f"{FULLNAME}-checkpoints", "readOnly": True}
    assert ATHENE.startswith(mount["mountPath"] + "/")  # the model is read from that claim


def test_enabled_env(reward: Manifest) -> None:
    env = env_of(reward.container("reward"))
    assert env["SEMIRL_REWARD_MODEL"]["value"] == ATHENE
    assert env["SEMIRL_REWARD_SCORE_TOKEN"]["value"] == SCORE_TOKEN
    assert env["SEMIRL_REWARD_DTYPE"]["value"] == "bfloat16"
    assert env["SEMIRL_REWARD_MAX_LENGTH"]["value"] == "4096"
    assert env["SEMIRL_REWARD_PROMPT_FORMAT"]["value"] == "chat"
    assert env["SEMIRL_REWARD_MAX_BATCH_TOKENS"]["value"] == "16384"
    assert env["SEMIRL_REWARD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["SEMIRL_ADVERTISE_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["SEMIRL_GRPC_PORT"]["value"] == "50051"
    assert all(isinstance(item.get("value", ""), str) for item in env.values())


def test_values_reach_the_env() -> None:
    manifest = render(sets=("reward.enabled=true", f"reward.model={ATHENE}", "reward.dtype=float16",
                            "reward.maxLength=8192", "reward.promptFormat=raw", "reward.maxBatchTokens=65536"))
    env = env_of(manifest.container("reward"))
    assert env["SEMIRL_REWARD_DTYPE"]["value"] == "float16"
    assert env["SEMIRL_REWARD_MAX_LENGTH"]["value"] == "8192"
    assert env["SEMIRL_REWARD_PROMPT_FORMAT"]["value"] == "raw"
    assert env["SEMIRL_REWARD_MAX_BATCH_TOKENS"]["value"] == "65536"
    assert "SEMIRL_REWARD_SCORE_TOKEN" not in env  # "" = the service's default, the last token


def test_enabled_without_a_model_is_refused() -> None:
    error = render_error(sets=("reward.enabled=true",))
    assert "reward.model is required when reward.enabled is true" in error


@pytest.mark.parametrize("bad", ["reward.dtype=int8", "reward.promptFormat=markdown", "reward.maxLength=0"])
def test_bad_reward_settings_are_rejected_by_the_schema(bad: str) -> None:
    error = render_error(sets=(*ENABLED, bad))
    assert "/reward/" in error, error


def test_keda_scales_on_the_to_reward_backlog() -> None:
    manifest = render(sets=(*ENABLED, "reward.autoscaling.keda.enabled=true"), api_versions=(KEDA_API,))
    scaled = manifest.get("ScaledObject", f"{FULLNAME}-reward")["spec"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{FULLNAME}-reward"}
    triggers = scaled["triggers"]
    assert {t["type"] for t in triggers} == {"redis-streams"}
    for trigger in triggers:
        assert trigger["metadata"]["stream"] == keys.TO_REWARD == "semirl:stream:to_reward"
        assert trigger["metadata"]["consumerGroup"] == keys.REWARDS_GROUP == "rewards"
    assert any("lagCount" in t["metadata"] for t in triggers)  # the backlog
    assert "replicas" not in manifest.workload("reward")["spec"]  # KEDA owns the replica count


def test_the_values_model_agrees() -> None:
    with pytest.raises(pydantic.ValidationError, match="reward.model is required"):
        ChartValues.model_validate({"reward": {"enabled": True}})
    assert ChartValues.model_validate({"reward": {"enabled": True, "model": ATHENE}}).reward.dtype == "bfloat16"
