"""`make images`: build semirl's five images from docker/, with whatever builder this machine has.

- `docker build` where a Docker engine answers;
- otherwise, as root, buildah with `--isolation chroot`, which needs no engine and no container runtime
  (docker/README.md); buildah's default OCI format drops HEALTHCHECK, so it builds with `--format docker`;
- otherwise `podman build` (rootless).

The base image (`python:3.11-slim-bookworm`) is pulled where a registry answers. Where none does, `--stand-in-base`
makes one with mmdebstrap from this machine's own apt sources: Debian bookworm with python3.11 linked at
/usr/local/bin (where the official image has its Python), python3-venv, python3-pip, python3-dev and
ca-certificates, imported under the official name.

Package indexes come from pip's own configuration on this machine (`pip config list`), never from the repository:
its CA bundle goes in as the `pipca` secret of every build; for the CPU images its index URLs and find-links go in as
a pip config (the `pipconf` secret), and those that are local directories (file:// indexes, wheel folders) are
mounted read-only at the same path (buildah only; docker and podman builds take `--build-arg
PIP_EXTRA_INDEX_URL=...` instead). cpu-all's CPU torch wheel comes from there. The GPU images take PyPI only: a
`+cpu` torch in a local folder would satisfy their `torch==2.13.0` too (their build asserts a CUDA build and stops).

Each build's seconds and the image's size go to a JSON report (`--report`), the figures in docker/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES = {  # image name -> Dockerfile (the skaffold artifacts, skaffold.yaml)
    "semirl-cpu": "cpu.Dockerfile",
    "semirl-cpu-all": "cpu-all.Dockerfile",
    "semirl-trainer": "trainer.Dockerfile",
    "semirl-reward": "reward.Dockerfile",
    "semirl-generator": "generator.Dockerfile",
}
CPU_IMAGES = ("semirl-cpu", "semirl-cpu-all")
# Only the CPU images take this machine's configured indexes: a local wheel folder with torch's `+cpu` build also
# satisfies `torch==2.13.0`, and the GPU images must get PyPI's CUDA build (their build refuses a CPU torch).
LOCAL_INDEX_IMAGES = CPU_IMAGES
BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
STAND_IN_PACKAGES = ("python3-venv", "python3-pip", "python3-dev", "ca-certificates")
PIP_KEYS = ("index-url", "extra-index-url", "find-links")


def log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    log("$ " + " ".join(argv))
    return subprocess.run(list(argv), check=True, text=True, **kwargs)  # type: ignore[call-overload]


def answers(argv: Sequence[str]) -> bool:
    if not shutil.which(argv[0]):
        return False
    return subprocess.run(list(argv), capture_output=True).returncode == 0


def pick_builder(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    if answers(["docker", "info"]):  # an engine runs
        return "docker"
    # As root, buildah's chroot isolation builds where podman's runtime cannot start a container (no cgroup
    # controllers, no rlimits: this project's development machines); podman otherwise (rootless).
    if shutil.which("buildah") and os.geteuid() == 0:
        return "buildah"
    if answers(["podman", "info"]):
        return "podman"
    raise SystemExit("no image builder: install docker, podman or buildah (Debian: apt-get install buildah)")


def pip_settings() -> dict[str, list[str]]:
    """pip's configured index URLs and find-links (`pip config list`), each key's values in order."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    found: dict[str, list[str]] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        name = key.split(".", 1)[-1]
        if name in PIP_KEYS or name == "cert":
            found.setdefault(name, []).extend(value.strip().strip("'\"").split())
    return found


def local_directory(location: str) -> Path | None:
    parsed = urlparse(location)
    if parsed.scheme == "file":
        path = Path(parsed.path)
    elif parsed.scheme == "":
        path = Path(location)
    else:
        return None
    if not path.is_dir():
        return None
    # a PEP 503 index folder ("…/simple") links its files relative to it ("../files/…"): mount the folder above
    return path.parent if path.name == "simple" else path


def pip_conf(settings: dict[str, list[str]]) -> str:
    lines = ["[global]"]
    for key in PIP_KEYS:
        if settings.get(key):
            lines.append(f"{key} = {' '.join(dict.fromkeys(settings[key]))}")
    return "\n".join(lines) + "\n"


def ca_bundle(settings: dict[str, list[str]]) -> Path | None:
    for candidate in [*settings.get("cert", []), os.environ.get("PIP_CERT", ""), "/etc/ssl/certs/ca-certificates.crt"]:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def image_exists(builder: str, name: str) -> bool:
    tool = "podman" if builder == "buildah" and shutil.which("podman") else builder
    if tool == "buildah":
        return subprocess.run(["buildah", "inspect", "--type", "image", name], capture_output=True).returncode == 0
    return subprocess.run([tool, "image", "inspect", name], capture_output=True).returncode == 0


def make_stand_in_base(builder: str, work: Path) -> None:
    """Debian bookworm from this machine's apt sources, shaped like the official python image."""
    if not shutil.which("mmdebstrap"):
        raise SystemExit("--stand-in-base needs mmdebstrap (Debian: apt-get install mmdebstrap)")
    sources = next((p for p in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
                    if p.is_file()), None)
    tarball = work / "base.tar"
    links = "; ".join(f'ln -sf /usr/bin/python3.11 "$1/usr/local/bin/{n}"' for n in ("python", "python3",
                                                                                       "python3.11"))
    argv = ["mmdebstrap", "--variant=apt", f"--include={','.join(STAND_IN_PACKAGES)}",
            f"--customize-hook={links}", "bookworm", str(tarball)]
    if sources:
        argv.append(str(sources))
    run(argv)
    importer = "podman" if shutil.which("podman") else builder
    run([importer, "import", str(tarball), BASE_IMAGE])
    tarball.unlink()


def build_command(builder: str, dockerfile: str, tag: str, secrets: dict[str, Path], mounts: list[Path],
                  build_args: list[str]) -> list[str]:
    argv = [builder, "build"] if builder != "buildah" else ["buildah", "bud", "--isolation", "chroot",
                                                            "--format", "docker", "--layers"]
    argv += ["-f", str(REPO_ROOT / "docker" / dockerfile), "-t", tag]
    for name, path in secrets.items():
        argv += ["--secret", f"id={name},src={path}"]
    if builder == "buildah":
        for path in mounts:
            argv += ["--volume", f"{path}:{path}:ro"]
    for arg in build_args:
        argv += ["--build-arg", arg]
    return [*argv, str(REPO_ROOT)]


def image_size(builder: str, tag: str) -> int:
    tool = "podman" if builder == "buildah" and shutil.which("podman") else builder
    if tool == "buildah":
        out = run(["buildah", "inspect", "--type", "image", "--format", "{{.Docker.Size}}", tag],
                  capture_output=True).stdout
    else:
        out = run([tool, "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True).stdout
    return int(out.strip() or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", help=f"default: all five ({', '.join(IMAGES)})")
    parser.add_argument("--cpu", action="store_true", help="only the CPU images (semirl-cpu, semirl-cpu-all)")
    parser.add_argument("--builder", choices=["auto", "docker", "podman", "buildah"], default="auto")
    parser.add_argument("--tag", default="latest")
    parser.add_argument("--stand-in-base", action="store_true",
                        help="make the base with mmdebstrap when it is not there (no registry reachable)")
    parser.add_argument("--build-arg", action="append", default=[], help="passed on to every build")
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "bench" / "results" / "images.json")
    args = parser.parse_args(argv)
    images = list(CPU_IMAGES) if args.cpu else (args.images or list(IMAGES))
    if unknown := [name for name in images if name not in IMAGES]:
        parser.error(f"no such image: {', '.join(unknown)} (the images: {', '.join(IMAGES)})")
    builder = pick_builder(args.builder)
    if builder == "buildah" and os.geteuid() != 0:
        raise SystemExit("buildah --isolation chroot builds as root")
    settings = pip_settings()
    mounts = sorted({d for key in PIP_KEYS for loc in settings.get(key, []) if (d := local_directory(loc))})
    report: dict[str, object] = {"builder": builder, "images": {}}
    with tempfile.TemporaryDirectory(prefix="semirl-images-") as tmp:
        work = Path(tmp)
        secrets: dict[str, Path] = {}
        if ca := ca_bundle(settings):
            secrets["pipca"] = ca
        if any(settings.get(k) for k in PIP_KEYS):
            conf = work / "pip.conf"
            conf.write_text(pip_conf(settings))
            secrets["pipconf"] = conf
        if not image_exists(builder, BASE_IMAGE) and args.stand_in_base:
            started = time.monotonic()
            make_stand_in_base(builder, work)
            report["stand_in_base_s"] = round(time.monotonic() - started, 1)
        for name in images:
            tag = f"{name}:{args.tag}"
            started = time.monotonic()
            local = name in LOCAL_INDEX_IMAGES
            image_secrets = secrets if local else {k: v for k, v in secrets.items() if k != "pipconf"}
            run(build_command(builder, IMAGES[name], tag, image_secrets, mounts if local else [], args.build_arg))
            seconds = round(time.monotonic() - started, 1)
            size = image_size(builder, tag)
            report["images"][name] = {"seconds": seconds, "bytes": size}  # type: ignore[index]
            log(f"{tag}: {size / 1e9:.2f} GB in {seconds:.0f} s")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.report.read_text()) if args.report.is_file() else {}
    previous.setdefault("images", {}).update(report.pop("images"))  # type: ignore[union-attr]
    previous.update(report)
    args.report.write_text(json.dumps(previous, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
