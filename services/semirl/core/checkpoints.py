"""The checkpoint store on shared storage (DESIGN §5).

Layout under the store root, per run (`run_dir` = `<store>/runs/<run_id>` unless the spec names a subdir):

    <run_dir>/policy/v<step>/    HF checkpoint + MANIFEST.json   (what generators load)
    <run_dir>/trainer/step<step>/ trainer state for resume        (DeepSpeed + semirl state)
    <run_dir>/final/             the run's final policy

Writers stage into a hidden sibling directory and rename it into place, so a reader never sees a half-written
checkpoint; `verify` checks every file's size and sha256 against the manifest before a commit or a load.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MANIFEST = "MANIFEST.json"
_VERSION_DIR = re.compile(r"^v(\d+)$")
_STEP_DIR = re.compile(r"^step(\d+)$")


class CheckpointError(Exception):
    """A checkpoint is missing, incomplete or corrupt."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path, extra: dict | None = None) -> dict:
    files = {
        str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": sha256_of(p)}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"files": files, **(extra or {})}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def verify(directory: Path) -> dict:
    """Return the manifest of `directory`, or raise CheckpointError if any file is missing or differs."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{directory}: no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{directory}: unreadable manifest ({err})") from err
    if not files:
        raise CheckpointError(f"{directory}: manifest lists no files")
    for name, meta in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{directory}: {name} is missing")
        if path.stat().st_size != meta["size"]:
            raise CheckpointError(f"{directory}: {name} has {path.stat().st_size} bytes, manifest says {meta['size']}")
        if sha256_of(path) != meta["sha256"]:
            raise CheckpointError(f"{directory}: {name} does not match its sha256")
    return manifest


@contextmanager
def staged_directory(final: Path, extra_manifest: dict | None = None) -> Iterator[Path]:
    """Yield a temporary directory; on success write its manifest and rename it to `final` atomically."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        write_manifest(staging, extra_manifest)
        _fsync_tree(staging)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


class RunCheckpoints:
    """The checkpoint directories of one run."""

    def __init__(self, store_root: Path | str, run_id: str, subdir: str | None = None) -> None:
        self.store_root = Path(store_root).resolve()
        self.run_dir = (self.store_root / (subdir or f"runs/{run_id}")).resolve()
        if not self.run_dir.is_relative_to(self.store_root):
            raise CheckpointError(f"run directory {self.run_dir} escapes the store {self.store_root}")

    @property
    def policy_root(self) -> Path:
        return self.run_dir / "policy"

    @property
    def trainer_root(self) -> Path:
        return self.run_dir / "trainer"

    @property
    def final_dir(self) -> Path:
        return self.run_dir / "final"

    def policy_dir(self, version: int) -> Path:
        return self.policy_root / f"v{version}"

    def trainer_dir(self, step: int) -> Path:
        return self.trainer_root / f"step{step}"

    def policy_versions(self) -> list[int]:
        return _numbered(self.policy_root, _VERSION_DIR)

    def trainer_steps(self) -> list[int]:
        return _numbered(self.trainer_root, _STEP_DIR)

    def latest_valid_trainer_step(self) -> int | None:
        """Newest trainer-state checkpoint whose manifest verifies (a torn one is skipped)."""
        for step in reversed(self.trainer_steps()):
            try:
                verify(self.trainer_dir(step))
                return step
            except CheckpointError:
                continue
        return None

    def retain(self, keep: int, protect: set[int] | None = None) -> list[int]:
        """Delete all but the newest `keep` policy versions and trainer states, sparing `protect`."""
        removed = []
        protect = protect or set()
        versions = self.policy_versions()
        for version in versions[: max(0, len(versions) - keep)]:
            if version not in protect:
                shutil.rmtree(self.policy_dir(version), ignore_errors=True)
                removed.append(version)
        steps = self.trainer_steps()
        for step in steps[: max(0, len(steps) - keep)]:
            shutil.rmtree(self.trainer_dir(step), ignore_errors=True)
        return removed


def _numbered(root: Path, pattern: re.Pattern[str]) -> list[int]:
    if not root.is_dir():
        return []
    found = (pattern.match(p.name) for p in root.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)
