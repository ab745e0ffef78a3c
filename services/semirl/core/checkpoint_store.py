"""The checkpoint store on shared storage (docs/architecture.md, checkpoints; decision 28).

Layout under the store root, per run (`run_dir` = `<store>/runs/<run_id>` unless the spec names a subdir):

    <run_dir>/policy/v<step>/    HF checkpoint + MANIFEST.json   (what generators load)
    <run_dir>/trainer/step<step>/ trainer state for resume        (DeepSpeed + semirl state)
    <run_dir>/final/             the run's final policy

Writers stage into a hidden sibling directory, hash and fsync its files, write MANIFEST.json and rename it into
place, so a reader never sees a half-written checkpoint and a committed one survives a crash; `verify` checks
every file's size and digest against the manifest before a commit or a load. The writeback of the staged files
starts while they are being written, and the hashes run while the fsync waits, so a commit costs little more than
the bytes reaching the disk.

Digests. The manifest names its hash ("algorithm"; a manifest without one is whole-file sha256, as all were
before the field). New manifests use xxh3-128 over segments of SEGMENT_BYTES: a file's digest is the hash of its
segments' digests in order, so the segments of one 16 GB shard are hashed by all cores at once. The digest
guards against torn, truncated and corrupted files, not against an attacker (whoever can rewrite a file can
rewrite the manifest beside it), so a non-cryptographic hash is enough, and xxh3 runs at memory speed where
sha256 managed ~1.4 GB/s: with sha256, hashing a sync's weights three times (trainer, controller, generator) cost
more than saving and reloading them (bench/commit_path.py). Reads go in CHUNK_BYTES pieces into one buffer per
thread, so memory stays bounded whatever the file sizes."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import xxhash

MANIFEST = "MANIFEST.json"
HASH = "xxh3_128"           # what new manifests use
LEGACY_HASH = "sha256"      # what a manifest without an "algorithm" field used (whole files, no segments)
SEGMENT_BYTES = 32 << 20    # new manifests hash each file in segments of this size, so one big file uses all cores
CHUNK_BYTES = 2 << 20       # per read: amortizes the call, and the chunk is still in the CPU cache when hashed
_VERSION_DIR = re.compile(r"^v(\d+)$")
_STEP_DIR = re.compile(r"^step(\d+)$")


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# Segments hashed at once (the hashes release the GIL); memory for reads is at most THREADS * CHUNK_BYTES. At
# least two, so that one thread's read overlaps another's hashing even on one core.
THREADS = min(16, max(2, _cpus()))


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...


_HASHERS: dict[str, Callable[[], Hasher]] = {
    "xxh3_128": xxhash.xxh3_128,
    "sha256": hashlib.sha256,
}
HASHES = tuple(_HASHERS)


class CheckpointError(Exception):
    """A checkpoint is missing, incomplete or corrupt."""


def new_hasher(algorithm: str) -> Hasher:
    try:
        return _HASHERS[algorithm]()
    except KeyError:
        raise CheckpointError(f"unknown hash algorithm {algorithm!r} (known: {', '.join(HASHES)})") from None


def _segments(size: int, segment_bytes: int | None) -> list[tuple[int, int]]:
    """(offset, length) of each segment; without a segment size, the whole file is one."""
    if segment_bytes is None:
        return [(0, size)]
    return [(offset, min(segment_bytes, size - offset)) for offset in range(0, size, segment_bytes)]


def _hash_range(path: Path, algorithm: str, offset: int, length: int) -> bytes:
    """Digest of `length` bytes of `path` from `offset`, read in chunks into one reused buffer."""
    hasher = new_hasher(algorithm)
    view = memoryview(bytearray(min(CHUNK_BYTES, length)))
    with path.open("rb", buffering=0) as handle:
        if hasattr(os, "posix_fadvise"):  # a larger read-ahead: the next chunk arrives while this one is hashed
            os.posix_fadvise(handle.fileno(), offset, length, os.POSIX_FADV_SEQUENTIAL)
        handle.seek(offset)
        remaining = length
        while remaining:
            read = handle.readinto(view[:min(remaining, len(view))])
            if not read:
                raise CheckpointError(f"{path}: ends before byte {offset + length}")
            hasher.update(view[:read])
            remaining -= read
    return hasher.digest()


def _combine(algorithm: str, parts: list[bytes], segmented: bool) -> str:
    """A segmented file's digest is the hash of its segments' digests, in order; a whole file's is its own."""
    if not segmented:
        return parts[0].hex()
    outer = new_hasher(algorithm)
    for part in parts:
        outer.update(part)
    return outer.hexdigest()


def _digests(
    directory: Path, sizes: dict[str, int], algorithm: str, segment_bytes: int | None, fsync: bool = False
) -> dict[str, str]:
    """Digest of each file in `sizes` (name: bytes to hash); with `fsync`, each file is flushed meanwhile."""
    new_hasher(algorithm)  # an unknown algorithm fails here, not in a worker
    tasks = [(name, *segment) for name, size in sizes.items() for segment in _segments(size, segment_bytes)]
    with ThreadPoolExecutor(THREADS) as hashing, ThreadPoolExecutor(THREADS) as syncing:
        # The fsyncs wait on the disk while the hashes keep the CPUs busy: the two overlap.
        syncs = [syncing.submit(_fsync, directory / name) for name in sizes] if fsync else []
        parts = [hashing.submit(_hash_range, directory / name, algorithm, *segment) for name, *segment in tasks]
        for sync in syncs:
            sync.result()
        by_file: dict[str, list[bytes]] = {name: [] for name in sizes}
        for (name, _, _), part in zip(tasks, parts, strict=True):
            by_file[name].append(part.result())
    return {name: _combine(algorithm, found, segment_bytes is not None) for name, found in by_file.items()}


def write_manifest(directory: Path, extra: dict | None = None, *, fsync: bool = False) -> dict:
    """Hash every file under `directory` into its MANIFEST.json; with `fsync`, also flush files and manifest."""
    sizes = {
        str(p.relative_to(directory)): p.stat().st_size
        for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST
    }
    digests = _digests(directory, sizes, HASH, SEGMENT_BYTES, fsync=fsync)
    files = {name: {"size": size, HASH: digests[name]} for name, size in sizes.items()}
    manifest = {**(extra or {}), "algorithm": HASH, "segment_bytes": SEGMENT_BYTES, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    if fsync:
        _fsync(directory / MANIFEST)
    return manifest


def verify(directory: Path) -> dict:
    """Return the manifest of `directory`, or raise CheckpointError if any file is missing or differs."""
    manifest = _read_manifest(directory)
    algorithm = manifest.get("algorithm", LEGACY_HASH)
    files: dict[str, dict[str, Any]] = manifest["files"]
    try:
        _check_sizes(directory, files)  # missing and truncated files fail fast, before any byte is hashed
        sizes = {name: meta["size"] for name, meta in files.items()}
        digests = _digests(directory, sizes, algorithm, manifest.get("segment_bytes"))
    except OSError as err:  # e.g. deleted or unreadable while being checked
        raise CheckpointError(f"{directory}: unreadable ({err})") from err
    for name, meta in files.items():
        if digests[name] != meta.get(algorithm):
            raise CheckpointError(f"{directory}: {name} does not match its {algorithm} digest")
    return manifest


def check_complete(directory: Path) -> dict:
    """Return the manifest of `directory`, or raise CheckpointError if a file is missing or has another size than
    the manifest says: what a reader checks of a version someone else has already verified byte for byte."""
    manifest = _read_manifest(directory)
    try:
        _check_sizes(directory, manifest["files"])
    except OSError as err:
        raise CheckpointError(f"{directory}: unreadable ({err})") from err
    return manifest


def _check_sizes(directory: Path, files: dict[str, dict[str, Any]]) -> None:
    for name, meta in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{directory}: {name} is missing")
        size = path.stat().st_size
        if size != meta["size"]:
            raise CheckpointError(f"{directory}: {name} has {size} bytes, manifest says {meta['size']}")


def _read_manifest(directory: Path) -> dict:
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{directory}: no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        sizes_are_ints = all(isinstance(meta["size"], int) for meta in files.values())
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{directory}: unreadable manifest ({err!r})") from err
    segment_bytes = manifest.get("segment_bytes")
    if not sizes_are_ints or not (segment_bytes is None or (isinstance(segment_bytes, int) and segment_bytes > 0)):
        raise CheckpointError(f"{directory}: unreadable manifest (sizes must be integers, segment_bytes positive)")
    if not files:
        raise CheckpointError(f"{directory}: manifest lists no files")
    return manifest


@contextmanager
def staged_directory(final: Path, extra_manifest: dict | None = None) -> Iterator[Path]:
    """Yield a temporary directory; on success write its manifest and rename it to `final` atomically."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        with _writeback_while_writing(staging):
            yield staging
        write_manifest(staging, extra_manifest, fsync=True)
        _fsync_directories(staging)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        _fsync(final.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def staged_copy(source: Path, final: Path, extra_manifest: dict | None = None, *, link: bool = False) -> Path:
    """`final` as a staged copy of the committed directory `source` (its manifest rewritten). With `link`, files
    are hard links where the filesystem allows (committed files are never modified, and a link outlives the
    retention of `source`): an 8B export then costs no bytes; otherwise, or across filesystems, they are copied."""
    with staged_directory(final, extra_manifest) as staging:
        for path in sorted(source.rglob("*")):
            if not path.is_file() or path.name == MANIFEST:
                continue
            target = staging / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            if link:
                try:
                    os.link(path, target)
                    continue
                except OSError:
                    pass  # another filesystem, or links not allowed: copy
            shutil.copy2(path, target)
    return final


def _libc_start_writeback() -> Callable[[int], object] | None:
    """libc's sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE): start writing a file's dirty pages, don't wait.

    Linux only (Python's os module does not offer it); None elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return lambda descriptor: function(descriptor, 0, 0, 2)  # 2 = SYNC_FILE_RANGE_WRITE


_START_WRITEBACK = _libc_start_writeback()
WRITEBACK_INTERVAL_S = 0.02


@contextmanager
def _writeback_while_writing(directory: Path) -> Iterator[None]:
    """While the body writes into `directory`, keep starting the writeback of what it has written so far.

    The fsync after the body then waits for the tail only, not for every byte: the disk works while the writer
    serializes, as PostgreSQL's checkpoint_flush_after and RocksDB's bytes_per_sync do. Best effort: durability
    rests on the fsync alone.
    """
    if _START_WRITEBACK is None:
        yield
        return
    stop = threading.Event()
    thread = threading.Thread(target=_start_writeback_until, args=(directory, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _start_writeback_until(directory: Path, stop: threading.Event) -> None:
    assert _START_WRITEBACK is not None
    while not stop.wait(WRITEBACK_INTERVAL_S):
        try:
            files = [path for path in directory.rglob("*") if path.is_file()]
        except OSError:  # the writer removed something while we listed
            continue
        for path in files:
            try:
                descriptor = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                _START_WRITEBACK(descriptor)
            finally:
                os.close(descriptor)


def _fsync(path: Path) -> None:
    """Flush a file, or a directory's entries, to stable storage."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError:
        if not path.is_dir():  # some filesystems refuse fsync on a directory; the files' fsync is what matters
            raise
    finally:
        os.close(descriptor)


def _fsync_directories(root: Path) -> None:
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        _fsync(directory)


class RunCheckpoints:
    """The checkpoint directories of one run."""

    def __init__(self, store_root: Path | str, run_id: str, subdir: str | None = None) -> None:
        self.store_root = Path(store_root).resolve()
        self.run_dir = (self.store_root / (subdir or f"runs/{run_id}")).resolve()
        if not self.run_dir.is_relative_to(self.store_root):
            raise CheckpointError(f"run directory {self.run_dir} escapes the store {self.store_root}")

    @classmethod
    def at(cls, run_dir: Path | str) -> RunCheckpoints:
        """The checkpoints of the run whose directory is `run_dir` (a run record's `run_dir`)."""
        directory = Path(run_dir).resolve()
        return cls(directory.parent, directory.name, subdir=directory.name)

    @property
    def policy_root(self) -> Path:
        return self.run_dir / "policy"

    def export_ready(self, version: int) -> bool:
        """Whether the policy export of `version` is written (its manifest is the last file to appear)."""
        return (self.policy_dir(version) / MANIFEST).is_file()

    def newest_export(self) -> int | None:
        ready = [v for v in self.policy_versions() if self.export_ready(v)]
        return ready[-1] if ready else None

    @property
    def trainer_root(self) -> Path:
        return self.run_dir / "trainer"

    @property
    def final_dir(self) -> Path:
        return self.run_dir / "final"

    @property
    def best_dir(self) -> Path:
        """The best evaluated policy by the run's `eval.best_by` criterion (exported beside final/)."""
        return self.run_dir / "best"

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
