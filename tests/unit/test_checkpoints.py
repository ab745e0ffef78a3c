"""Checkpoint store: staged writes, manifest verification, retention, path confinement."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
import xxhash

from semirl.core import checkpoint_store as checkpoints
from semirl.core.checkpoint_store import CheckpointError, RunCheckpoints, staged_directory, verify


def _write_checkpoint(path: Path, payload: bytes = b"weights" * 100, extra: dict | None = None) -> None:
    with staged_directory(path, extra) as tmp:
        (tmp / "model.safetensors").write_bytes(payload)
        (tmp / "config.json").write_text("{}")


def _manifest(path: Path) -> dict:
    return json.loads((path / checkpoints.MANIFEST).read_text())


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> int:
    """Segments and reads small enough that a test file spans several of each."""
    monkeypatch.setattr(checkpoints, "SEGMENT_BYTES", 1000)
    monkeypatch.setattr(checkpoints, "CHUNK_BYTES", 64)
    return 1000


def test_staged_write_produces_a_verifiable_checkpoint(tmp_path: Path) -> None:
    final = tmp_path / "policy" / "v2"
    _write_checkpoint(final, extra={"run_id": "r", "version": 2})
    manifest = verify(final)
    assert set(manifest["files"]) == {"model.safetensors", "config.json"}
    assert manifest["algorithm"] == "xxh3_128" and manifest["segment_bytes"] == checkpoints.SEGMENT_BYTES
    assert manifest["files"]["model.safetensors"]["size"] == 700
    assert (manifest["run_id"], manifest["version"]) == ("r", 2)
    assert not [p for p in final.parent.iterdir() if p.name.startswith(".tmp")]


def test_extra_manifest_fields_cannot_replace_the_file_list(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path / "v1", extra={"files": {}, "algorithm": "none"})
    manifest = verify(tmp_path / "v1")
    assert manifest["algorithm"] == "xxh3_128" and len(manifest["files"]) == 2


def test_truncated_checkpoint_is_rejected(tmp_path: Path) -> None:
    final = tmp_path / "v1"
    _write_checkpoint(final)
    weights = final / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="bytes"):
        verify(final)


def test_same_size_corruption_and_missing_files_are_rejected(tmp_path: Path) -> None:
    final = tmp_path / "v1"
    _write_checkpoint(final)
    weights = final / "model.safetensors"
    weights.write_bytes(b"X" * weights.stat().st_size)
    with pytest.raises(CheckpointError, match="model.safetensors does not match its xxh3_128 digest"):
        verify(final)
    weights.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        verify(final)
    with pytest.raises(CheckpointError, match="MANIFEST"):
        verify(tmp_path / "nothing")


def test_digest_is_the_hash_of_the_segment_digests(tmp_path: Path, small_segments: int) -> None:
    payload = bytes(range(256)) * 15  # 3840 bytes: segments of 1000, 1000, 1000, 840, each read in 64-byte chunks
    _write_checkpoint(tmp_path / "v1", payload)
    segments = [payload[i:i + small_segments] for i in range(0, len(payload), small_segments)]
    expected = xxhash.xxh3_128(b"".join(xxhash.xxh3_128(s).digest() for s in segments)).hexdigest()
    manifest = verify(tmp_path / "v1")
    assert manifest["segment_bytes"] == small_segments
    assert manifest["files"]["model.safetensors"]["xxh3_128"] == expected


@pytest.mark.parametrize("offset", [0, 999, 1000, 3839])
def test_a_flipped_byte_in_any_segment_is_detected(tmp_path: Path, small_segments: int, offset: int) -> None:
    _write_checkpoint(tmp_path / "v1", bytes(range(256)) * 15)
    _flip_byte(tmp_path / "v1" / "model.safetensors", offset)
    with pytest.raises(CheckpointError, match="model.safetensors does not match"):
        verify(tmp_path / "v1")


def test_verify_uses_the_segment_size_the_manifest_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "SEGMENT_BYTES", 100)
    _write_checkpoint(tmp_path / "v1")
    monkeypatch.setattr(checkpoints, "SEGMENT_BYTES", 4096)  # a reader built with another default
    assert verify(tmp_path / "v1")["segment_bytes"] == 100


def test_many_files_in_subdirectories_are_hashed_in_parallel(tmp_path: Path, small_segments: int) -> None:
    final = tmp_path / "trainer" / "step4"
    with staged_directory(final) as tmp:
        for rank in range(12):  # more files than threads, several segments each, and an empty one
            shard = tmp / "deepspeed" / "global_step" / f"rank{rank}_optim_states.pt"
            shard.parent.mkdir(parents=True, exist_ok=True)
            shard.write_bytes(bytes([rank]) * (2500 + rank))
        (tmp / "empty.json").write_bytes(b"")
    manifest = verify(final)
    assert len(manifest["files"]) == 13
    assert len({meta["xxh3_128"] for meta in manifest["files"].values()}) == 13
    _flip_byte(final / "deepspeed" / "global_step" / "rank7_optim_states.pt", 2000)
    with pytest.raises(CheckpointError, match="rank7_optim_states.pt does not match"):
        verify(final)


def test_a_sha256_manifest_without_algorithm_field_still_verifies(tmp_path: Path) -> None:
    """Manifests written before the algorithm field: whole-file sha256 under the key "sha256"."""
    directory = tmp_path / "v1"
    directory.mkdir()
    payload = b"old weights" * 50
    (directory / "model.safetensors").write_bytes(payload)
    files = {"model.safetensors": {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}}
    (directory / checkpoints.MANIFEST).write_text(json.dumps({"files": files, "version": 1}))
    assert verify(directory)["version"] == 1
    _flip_byte(directory / "model.safetensors", 3)
    with pytest.raises(CheckpointError, match="does not match its sha256 digest"):
        verify(directory)


@pytest.mark.parametrize("change", [
    {"algorithm": "md5"},
    {"segment_bytes": 0},
    {"segment_bytes": "64MiB"},
    {"files": {"model.safetensors": {"size": "700"}}},
    {"files": {}},
    {"files": ["model.safetensors"]},
])
def test_an_unusable_manifest_is_rejected(tmp_path: Path, change: dict) -> None:
    _write_checkpoint(tmp_path / "v1")
    manifest = {**_manifest(tmp_path / "v1"), **change}
    (tmp_path / "v1" / checkpoints.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError):
        verify(tmp_path / "v1")


def test_files_and_manifest_are_flushed_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flushed: list[tuple[str, bool]] = []  # (name, the final directory existed yet)
    final = tmp_path / "v1"
    real_fsync = checkpoints._fsync

    def recording_fsync(path: Path) -> None:
        flushed.append((path.name, final.exists()))
        real_fsync(path)

    monkeypatch.setattr(checkpoints, "_fsync", recording_fsync)
    _write_checkpoint(final)
    before_rename = {name for name, renamed in flushed if not renamed}
    assert {"model.safetensors", "config.json", checkpoints.MANIFEST} <= before_rename
    assert (tmp_path.name, True) in flushed  # the parent directory, for the rename itself


def test_writeback_starts_while_the_body_is_still_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started_for: set[int] = set()  # inodes

    def record(descriptor: int) -> None:
        started_for.add(os.fstat(descriptor).st_ino)

    monkeypatch.setattr(checkpoints, "_START_WRITEBACK", record)
    monkeypatch.setattr(checkpoints, "WRITEBACK_INTERVAL_S", 0.001)
    with staged_directory(tmp_path / "v1") as tmp:
        (tmp / "model.safetensors").write_bytes(b"w" * 1000)
        inode = (tmp / "model.safetensors").stat().st_ino
        deadline = time.monotonic() + 5
        while inode not in started_for and time.monotonic() < deadline:
            time.sleep(0.001)
        assert inode in started_for
    verify(tmp_path / "v1")


@pytest.mark.parametrize("start_writeback", [None, lambda descriptor: None], ids=["unsupported", "supported"])
def test_a_failed_write_stops_the_writeback_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_writeback: object
) -> None:
    monkeypatch.setattr(checkpoints, "_START_WRITEBACK", start_writeback)
    threads = threading.active_count()
    with pytest.raises(RuntimeError), staged_directory(tmp_path / "v1") as tmp:
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("trainer died mid-write")
    assert threading.active_count() == threads
    assert not (tmp_path / "v1").exists()


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    final = tmp_path / "policy" / "v3"
    with pytest.raises(RuntimeError), staged_directory(final) as tmp:
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("trainer died mid-write")
    assert not final.exists()
    assert list(final.parent.iterdir()) == []


def test_retention_keeps_newest_and_protected(tmp_path: Path) -> None:
    run = RunCheckpoints(tmp_path, "run-1")
    for version in (1, 2, 3, 4, 5):
        _write_checkpoint(run.policy_dir(version))
        _write_checkpoint(run.trainer_dir(version))
    removed = run.retain(keep=2, protect={1})
    assert removed == [2, 3]
    assert run.policy_versions() == [1, 4, 5]
    assert run.trainer_steps() == [4, 5]


def test_latest_valid_trainer_step_skips_a_torn_checkpoint(tmp_path: Path) -> None:
    run = RunCheckpoints(tmp_path, "run-1")
    _write_checkpoint(run.trainer_dir(2))
    _write_checkpoint(run.trainer_dir(4))
    (run.trainer_dir(4) / "model.safetensors").write_bytes(b"torn")
    assert run.latest_valid_trainer_step() == 2


def test_run_directory_cannot_escape_the_store(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        RunCheckpoints(tmp_path / "store", "r", subdir="../../elsewhere")


def test_a_reader_of_a_verified_version_checks_completeness_not_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generators load versions the controller hashed before committing them: they check every file is there at
    its size (cheap), and hash again only with SEMIRL_VERIFY_ON_LOAD=full."""
    from semirl.generator.engine import check_policy_dir

    policy = tmp_path / "v1"
    _write_checkpoint(policy)
    assert checkpoints.check_complete(policy)["files"].keys() == _manifest(policy)["files"].keys()
    check_policy_dir(policy)
    weights = next(name for name in _manifest(policy)["files"] if name != "config.json")
    _flip_byte(policy / weights, 3)  # same size, other bytes: only a hash sees it
    check_policy_dir(policy)
    monkeypatch.setenv("SEMIRL_VERIFY_ON_LOAD", "full")
    with pytest.raises(CheckpointError, match="does not match"):
        check_policy_dir(policy)
    monkeypatch.delenv("SEMIRL_VERIFY_ON_LOAD")
    with (policy / weights).open("ab") as handle:
        handle.write(b"x")  # a truncated or extended file is caught without hashing
    with pytest.raises(CheckpointError, match="bytes, manifest says"):
        check_policy_dir(policy)
    (policy / weights).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        checkpoints.check_complete(policy)
