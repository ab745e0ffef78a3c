"""skaffold.yaml (schema skaffold/v4beta13; the skaffold binary is not installable here, so the file is checked
directly): artifacts build from the repo root, every artifact reaches its components' image values, and the chart
rendered with exactly what skaffold would pass runs the images skaffold built, in both the default and `cpu` profile."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART_DIR, REPO_ROOT, effective_config, load_skaffold, template_var, venv_tool

COMPONENTS = ("controller", "verifier", "generator", "trainer", "reward")
# artifact -> the components whose image it is (the contract's table)
EXPECTED_IMAGES: dict[str | None, dict[str, tuple[str, ...]]] = {
    None: {
        "semirl-generator": ("generator",),
        "semirl-trainer": ("trainer",),
        "semirl-reward": ("reward",),
        "semirl-cpu": ("controller", "verifier"),
    },
    "cpu": {"semirl-cpu-all": COMPONENTS},
}
PROFILES = list(EXPECTED_IMAGES)
PROFILE_IDS = ["default" if p is None else p for p in PROFILES]
CPU_VALUES = "deploy/helm/semirl/ci/cpu-values.yaml"
GPU_VALUES = "deploy/helm/semirl/ci/gpu-values.yaml"

# Keys of the v4beta13 JSON schema (docs-v2/content/en/schemas/v4beta13.json) for the objects this file uses;
# every object there has additionalProperties: false, so an unknown key is an invalid config.
SCHEMA_KEYS = {
    "config": {"apiVersion", "kind", "metadata", "requires", "build", "test", "manifests", "deploy", "portForward",
               "resourceSelector", "verify", "customActions", "profiles"},
    "metadata": {"name", "labels", "annotations"},
    "build": {"artifacts", "insecureRegistries", "tagPolicy", "platforms", "local", "googleCloudBuild", "cluster"},
    "local": {"push", "tryImportMissing", "useDockerCLI", "useBuildkit", "concurrency"},
    "tagPolicy": {"gitCommit", "sha256", "envTemplate", "dateTime", "customTemplate", "inputDigest"},
    "artifact": {"image", "context", "sync", "requires", "hooks", "platforms", "runtimeType", "docker"},
    "docker": {"dockerfile", "target", "buildArgs", "network", "addHost", "cacheFrom", "cliFlags", "pullParent",
               "noCache", "squash", "secrets", "ssh", "cacheTo"},
    "deploy": {"docker", "helm", "kpt", "kubectl", "cloudrun", "statusCheck", "statusCheckDeadlineSeconds",
               "tolerateFailuresUntilDeadline", "kubeContext", "logs"},
    "helm": {"releases", "flags", "hooks"},
    "release": {"name", "chartPath", "remoteChart", "valuesFiles", "namespace", "version", "setValues",
                "setValueTemplates", "setFiles", "createNamespace", "wait", "recreatePods", "skipBuildDependencies",
                "skipTests", "useHelmSecrets", "repo", "upgradeOnChange", "overrides", "packaged", "dependsOn"},
    "profile": {"name", "activation", "requiresAllActivations", "patches", "build", "test", "manifests", "deploy",
                "portForward", "resourceSelector", "verify", "customActions"},
    "patch": {"op", "path", "from", "value"},
}

# Example values for skaffold's template variables, as `skaffold run --default-repo registry.example/team` gives.
EXAMPLE_DOMAIN = "registry.example"
EXAMPLE_NAMESPACE = "team"
EXAMPLE_TAG = "abc123"


def _digest(artifact: str) -> str:
    return "sha256:" + hashlib.sha256(artifact.encode()).hexdigest()


def _keys(obj: dict[str, Any], kind: str, where: str) -> None:
    unknown = set(obj) - SCHEMA_KEYS[kind]
    assert not unknown, f"{where}: keys not in the v4beta13 schema for {kind}: {sorted(unknown)}"


@pytest.fixture(scope="module")
def skaffold() -> dict[str, Any]:
    return load_skaffold()


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    with (CHART_DIR / "values.yaml").open() as fh:
        return yaml.safe_load(fh)


def _release(config: dict[str, Any]) -> dict[str, Any]:
    releases = config["deploy"]["helm"]["releases"]
    assert len(releases) == 1
    return releases[0]


def test_config_matches_the_v4beta13_schema(skaffold: dict[str, Any]) -> None:
    assert skaffold["apiVersion"] == "skaffold/v4beta13"
    assert skaffold["kind"] == "Config"
    _keys(skaffold, "config", "top level")
    _keys(skaffold["metadata"], "metadata", "metadata")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", skaffold["metadata"]["name"])

    def check_build(build: dict[str, Any], where: str) -> None:
        _keys(build, "build", where)
        _keys(build.get("local", {}), "local", f"{where}.local")
        _keys(build.get("tagPolicy", {}), "tagPolicy", f"{where}.tagPolicy")
        for i, artifact in enumerate(build.get("artifacts", [])):
            _keys(artifact, "artifact", f"{where}.artifacts[{i}]")
            _keys(artifact["docker"], "docker", f"{where}.artifacts[{i}].docker")
            assert isinstance(artifact["image"], str) and artifact["image"]

    def check_deploy(deploy: dict[str, Any], where: str) -> None:
        _keys(deploy, "deploy", where)
        _keys(deploy["helm"], "helm", f"{where}.helm")
        for i, release in enumerate(deploy["helm"]["releases"]):
            _keys(release, "release", f"{where}.helm.releases[{i}]")
            assert release["name"] and isinstance(release.get("valuesFiles", []), list)
            templates = release.get("setValueTemplates", {})
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in templates.items())

    check_build(skaffold["build"], "build")
    check_deploy(skaffold["deploy"], "deploy")
    for profile in skaffold.get("profiles", []):
        _keys(profile, "profile", f"profile {profile['name']}")
        if "build" in profile:
            check_build(profile["build"], f"profile {profile['name']}.build")
        if "deploy" in profile:
            check_deploy(profile["deploy"], f"profile {profile['name']}.deploy")
        for patch in profile.get("patches", []):
            _keys(patch, "patch", f"profile {profile['name']} patch")
            assert patch.get("op", "replace") in {"add", "remove", "replace", "move", "copy", "test"}
            assert patch["path"].startswith("/")
    assert {p["name"] for p in skaffold["profiles"]} >= {"cpu"}


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_artifacts_build_from_the_repo_root(skaffold: dict[str, Any], profile: str | None) -> None:
    config = effective_config(skaffold, profile)
    artifacts = config["build"]["artifacts"]
    assert [a["image"] for a in artifacts] == list(EXPECTED_IMAGES[profile]), "artifacts of the profile"
    for artifact in artifacts:
        context = (REPO_ROOT / artifact.get("context", ".")).resolve()
        assert context == REPO_ROOT, f"{artifact['image']}: context {artifact.get('context')} is not the repo root"
        dockerfile = context / artifact["docker"]["dockerfile"]
        assert dockerfile.is_file(), f"{artifact['image']}: {dockerfile} missing"
        assert dockerfile.parent == REPO_ROOT / "docker" and dockerfile.name.endswith(".Dockerfile")


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_every_artifact_sets_its_components_image_values(
    skaffold: dict[str, Any], values: dict[str, Any], profile: str | None
) -> None:
    templates = _release(effective_config(skaffold, profile))["setValueTemplates"]
    wanted: dict[str, str] = {}
    for artifact, components in EXPECTED_IMAGES[profile].items():
        var = template_var(artifact)
        for component in components:
            wanted[f"{component}.image.registry"] = f"{{{{.IMAGE_DOMAIN_{var}}}}}"
            wanted[f"{component}.image.repository"] = f"{{{{.IMAGE_REPO_NO_DOMAIN_{var}}}}}"
            wanted[f"{component}.image.tag"] = f"{{{{.IMAGE_TAG_{var}}}}}@{{{{.IMAGE_DIGEST_{var}}}}}"
    assert templates == wanted
    for key in templates:                                # every key is a real value of the chart
        node: Any = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{key}: not in deploy/helm/semirl/values.yaml"
            node = node[part]
        assert isinstance(node, str), f"{key}: not a string value in values.yaml"


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_every_chart_component_with_an_image_gets_one(
    skaffold: dict[str, Any], values: dict[str, Any], profile: str | None
) -> None:
    with_images = {
        name for name, block in values.items()
        if isinstance(block, dict) and isinstance(block.get("image"), dict) and "repository" in block["image"]
    }
    assert with_images >= set(COMPONENTS) | {"redis"}, with_images
    templates = _release(effective_config(skaffold, profile))["setValueTemplates"]
    mapped = {key.split(".")[0] for key in templates}
    assert mapped == with_images - {"redis"}, "redis keeps the upstream image; every other component gets a build"


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_release_and_values_files(skaffold: dict[str, Any], profile: str | None) -> None:
    release = _release(effective_config(skaffold, profile))
    assert (REPO_ROOT / release["chartPath"]).resolve() == CHART_DIR
    files = release["valuesFiles"]
    expected = ["deploy/helm/semirl/values.yaml", CPU_VALUES if profile == "cpu" else GPU_VALUES]
    assert files == expected
    for file in files:
        assert (REPO_ROOT / file).is_file(), f"{file} missing"


def test_gpu_deploy_asks_for_a_named_rwx_class(skaffold: dict[str, Any]) -> None:
    """The GPU deploy's checkpoint claim must not fall to the cluster's default (usually RWO-only) class."""
    with (REPO_ROOT / GPU_VALUES).open() as fh:
        checkpoints = yaml.safe_load(fh)["checkpoints"]
    assert checkpoints["storageClass"] and checkpoints["storageClass"] != "-"
    assert checkpoints["accessModes"] == ["ReadWriteMany"]
    assert not checkpoints.get("existingClaim")
    assert skaffold["deploy"]["statusCheckDeadlineSeconds"] >= 1800   # image pulls, model download and load


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_target_platform(skaffold: dict[str, Any], profile: str | None) -> None:
    """GPU images for x86 GPU nodes whatever builds them; the cpu profile builds for the local cluster."""
    build = effective_config(skaffold, profile)["build"]
    if profile is None:
        assert build["platforms"] == ["linux/amd64"]
        assert all("platforms" not in a for a in build["artifacts"])
    else:
        assert "platforms" not in build


# ---------------------------------------------------------------- render with what skaffold passes


def _template_values(artifacts: list[str], split_namespace: bool) -> tuple[dict[str, str], dict[str, str]]:
    """skaffold's template variables for the built artifacts, and the image each one should end up as."""
    variables: dict[str, str] = {}
    images: dict[str, str] = {}
    for artifact in artifacts:
        var = template_var(artifact)
        # `--default-repo registry.example/team` gives registry.example + team/<artifact>; the other split is what
        # a registry-only default repo would look like with the namespace folded into the domain part.
        domain, repo = (
            (EXAMPLE_DOMAIN, f"{EXAMPLE_NAMESPACE}/{artifact}")
            if split_namespace
            else (f"{EXAMPLE_DOMAIN}/{EXAMPLE_NAMESPACE}", artifact)
        )
        variables |= {
            f"IMAGE_DOMAIN_{var}": domain,
            f"IMAGE_REPO_NO_DOMAIN_{var}": repo,
            f"IMAGE_TAG_{var}": EXAMPLE_TAG,
            f"IMAGE_DIGEST_{var}": _digest(artifact),
        }
        images[artifact] = f"{EXAMPLE_DOMAIN}/{EXAMPLE_NAMESPACE}/{artifact}:{EXAMPLE_TAG}@{_digest(artifact)}"
    return variables, images


def _expand(template: str, variables: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in variables, f"template variable {name} names no built artifact"
        return variables[name]

    return re.sub(r"\{\{\s*\.([A-Za-z0-9_]+)\s*\}\}", sub, template)


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return [spec]
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
        return [spec["template"]["spec"]]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    return []


@pytest.mark.parametrize("split_namespace", [True, False], ids=["domain+team/repo", "domain/team+repo"])
@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_rendered_chart_runs_the_images_skaffold_built(
    skaffold: dict[str, Any], values: dict[str, Any], tmp_path: Path, profile: str | None, split_namespace: bool
) -> None:
    config = effective_config(skaffold, profile)
    release = _release(config)
    artifacts = [a["image"] for a in config["build"]["artifacts"]]
    variables, images = _template_values(artifacts, split_namespace)
    expected = {c: images[a] for a, comps in EXPECTED_IMAGES[profile].items() for c in comps}

    cmd = [str(venv_tool("helm")), "template", _expand(release["name"], variables), str(CHART_DIR)]
    cmd += ["--namespace", release.get("namespace", "default")]
    for file in release["valuesFiles"]:
        cmd += ["-f", str(REPO_ROOT / file)]
    for key, template in release["setValueTemplates"].items():
        cmd += ["--set", f"{key}={_expand(template, variables)}"]
    cmd += ["--set", "reward.enabled=true",               # the reward service is off by default; render it too
            "--set", "reward.model=/checkpoints/models/Athene-RM-8B"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(proc.stdout)

    redis = values["redis"]["image"]
    seen: dict[str, set[str]] = {}
    for doc in yaml.safe_load_all(proc.stdout):
        if not doc:
            continue
        for pod in _pod_specs(doc):
            labels = (doc.get("metadata") or {}).get("labels") or {}
            component = labels.get("app.kubernetes.io/component", "")
            for container in pod.get("initContainers", []) + pod.get("containers", []):
                image = container["image"]
                where = f"{doc['kind']}/{doc['metadata']['name']} container {container['name']}"
                if component in expected:
                    assert image == expected[component], f"{where}: {image}, want {expected[component]}"
                    seen.setdefault(component, set()).add(image)
                else:                                      # redis, helm test pods: upstream redis or a built image
                    assert image in images.values() or image.split("@")[0].split(":")[0].endswith(
                        redis["repository"]
                    ), f"{where}: unexpected image {image}"
    assert set(seen) == set(COMPONENTS), f"components rendered with a workload: {sorted(seen)}"

    if not split_namespace:                                # same manifests but for the image strings: validate once
        return
    validate = subprocess.run(
        [str(venv_tool("kubernetes-validate")), "--strict", "--quiet", str(rendered)],
        capture_output=True, text=True, timeout=300,
    )
    assert validate.returncode == 0, f"kubernetes-validate --strict:\n{validate.stdout}{validate.stderr}"
