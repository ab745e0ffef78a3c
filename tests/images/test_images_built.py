"""The images as built and run: each component's start path as the runtime user (uid 10001), and the tiny DPO run
started from the semirl-cpu-all image (controller, generator, verifier and trainer processes of the image).

Opt-in suite (`make test-images`, SEMIRL_IMAGE_TESTS=1): it builds the CPU images with scripts/build_images.py
(buildah --isolation chroot as root where no Docker engine runs, with a stand-in base where no registry answers) and
takes ~15 minutes on 2 cores, so it is not part of `make test`; run it before every change to docker/ or
pyproject.toml (docker/README.md). SEMIRL_GPU_IMAGE_TESTS=1 also builds the three GPU images and runs their checks
on the CPU (CUDA torch asserted, the trainer's ZeRO-3 engine, the reward model's load, vLLM and nvcc).
A built image runs through `buildah from` + `buildah run --isolation chroot`: podman's runtime cannot set rlimits on
this project's development machines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

pytestmark = [
    pytest.mark.images,
    pytest.mark.skipif(not os.environ.get("SEMIRL_IMAGE_TESTS"), reason="image suite: make test-images"),
]
GPU = bool(os.environ.get("SEMIRL_GPU_IMAGE_TESTS"))
RUNTIME_USER = "10001:10001"


def _build(images: Sequence[str]) -> None:
    if os.environ.get("SEMIRL_IMAGE_BUILD", "1") == "0":  # images built already (make images)
        return
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "build_images.py"), *images, "--stand-in-base"],
                   check=True, timeout=7200)


def run_in_image(image: str, argv: Sequence[str], *, volumes: Sequence[str] = (), timeout: float = 1800,
                 ) -> subprocess.CompletedProcess[str]:
    """`argv` in a fresh container of `image`, as the runtime user; the container is removed afterwards."""
    if shutil.which("buildah") is None:
        pytest.fail("the image suite needs buildah (Debian: apt-get install buildah)")
    container = subprocess.run(["buildah", "from", "--pull-never", image], check=True, capture_output=True,
                               text=True).stdout.strip()
    try:
        command = ["buildah", "run", "--isolation", "chroot", "--user", RUNTIME_USER]
        for volume in volumes:
            command += ["-v", volume]
        return subprocess.run([*command, container, "--", *argv], capture_output=True, text=True, timeout=timeout)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True)


def _checks(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    found = {}
    for line in result.stdout.splitlines():
        if line.startswith("{") and '"check"' in line:
            check = json.loads(line)
            found[check["check"]] = check
    return found


def _assert_checks(image: str, components: Sequence[str], *extra: str) -> dict[str, dict[str, object]]:
    result = run_in_image(image, ["python", "-m", "semirl.imagecheck", *components, *extra])
    checks = _checks(result)
    failed = {name: c.get("error") for name, c in checks.items() if not c["ok"]}
    assert result.returncode == 0 and not failed, f"{image}: {failed}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    assert set(components) <= set(checks), checks
    return checks


@pytest.fixture(scope="module")
def cpu_images() -> Iterator[None]:
    _build(["--cpu"])
    yield


def test_cpu_image_serves_the_controller_and_verifier(cpu_images: None) -> None:
    _assert_checks("semirl-cpu:latest", ["controller", "verifier"])


def test_cpu_all_image_starts_every_component_as_its_user(cpu_images: None) -> None:
    components = ["controller", "verifier", "trainer", "reward", "generator", "demo"]
    checks = _assert_checks("semirl-cpu-all:latest", components)
    assert checks["trainer"]["zero_stage"] == 3 and checks["demo"]["redis"] is True


def test_the_tiny_dpo_run_from_the_cpu_all_image(cpu_images: None, tmp_path: Path) -> None:
    """`semirl demo` on the k8s example spec, which reads the model and data baked at /opt/semirl/demo: the
    image's own controller, generator, verifier and trainer processes, as uid 10001; the run succeeds and learns on
    the held-out eval set."""
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    shutil.copy(REPO_ROOT / "examples" / "k8s-tiny-math-dpo.yaml", spec_dir / "spec.yaml")
    spec_dir.chmod(0o755)
    (spec_dir / "spec.yaml").chmod(0o644)
    result = run_in_image("semirl-cpu-all:latest",
                          ["semirl", "demo", "--spec", "/spec/spec.yaml", "--state-dir", "/tmp/demo-state"],
                          volumes=[f"{spec_dir}:/spec:ro"], timeout=1800)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert re.search(r"run \S+: succeeded", output), output[-3000:]
    learned = re.search(r"held-out accuracy on addition: step \d+ ([\d.]+)%.* -> step \d+ ([\d.]+)%", output)
    assert learned, output[-3000:]
    before, after = float(learned[1]), float(learned[2])
    assert after >= before + 10, f"held-out accuracy {before}% -> {after}%: the run did not learn"
    print(output[-1500:])


@pytest.mark.skipif(not GPU, reason="GPU images: SEMIRL_GPU_IMAGE_TESTS=1")
@pytest.mark.parametrize(("image", "components"), [
    ("semirl-trainer", ["trainer"]), ("semirl-reward", ["reward"]), ("semirl-generator", ["generator"]),
])
def test_gpu_image_checks_on_the_cpu(image: str, components: list[str]) -> None:
    _build([image])
    checks = _assert_checks(f"{image}:latest", components, "--expect-cuda")
    assert checks["cuda-build"]["cuda"], checks
