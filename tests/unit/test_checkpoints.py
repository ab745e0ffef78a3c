"""Checkpoint store: staged writes, manifest verification, retention, path confinement."""

from __future__ import annotations

from pathlib import Path

import pytest

from semirl.core.checkpoints import CheckpointError, RunCheckpoints, staged_directory, verify


def _write_checkpoint(path: Path, payload: bytes = b"weights" * 100) -> None:
    with staged_directory(path) as tmp:
        (tmp / "model.safetensors").write_bytes(payload)
        (tmp / "config.json").write_text("{}")


def test_staged_write_produces_a_verifiable_checkpoint(tmp_path: Path) -> None:
    final = tmp_path / "policy" / "v2"
    _write_checkpoint(final)
    manifest = verify(final)
    assert set(manifest["files"]) == {"model.safetensors", "config.json"}
    assert not [p for p in final.parent.iterdir() if p.name.startswith(".tmp")]


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
    with pytest.raises(CheckpointError, match="sha256"):
        verify(final)
    weights.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        verify(final)
    with pytest.raises(CheckpointError, match="MANIFEST"):
        verify(tmp_path / "nothing")


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
