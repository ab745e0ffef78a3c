"""A run owns its checkpoint directory: what the controller refuses as a new run's directory, and the claim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from semirl.core import keys
from semirl.core.checkpoint_store import staged_directory
from semirl.core.ownership import (
    RUN_ID_FILE,
    DirectoryTaken,
    check_subdir,
    claim_run_dir,
    record_problem,
    recorded_run_dirs,
    run_dir_problem,
)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    (root / "models" / "seed").mkdir(parents=True)
    return root


def _checkpoint(directory: Path, run_id: str) -> None:
    """A committed checkpoint (manifest recording `run_id`), as the trainer writes one."""
    with staged_directory(directory, {"run_id": run_id}) as staging:
        (staging / "weights.bin").write_bytes(b"w")


def test_a_new_or_empty_directory_is_a_run_directory_of_its_own(store: Path) -> None:
    assert run_dir_problem(store, store / "experiments" / "a") is None
    (store / "experiments" / "b").mkdir(parents=True)
    assert run_dir_problem(store, store / "experiments" / "b") is None
    assert run_dir_problem(store, store / "runs" / "r-1234") is None
    check_subdir(store, None)  # the default directory is judged at creation


@pytest.mark.parametrize("subdir", [".", "runs", "runs/", "experiments/..", "models/seed/../.."])
def test_the_store_root_and_runs_are_not_run_directories(store: Path, subdir: str) -> None:
    with pytest.raises(DirectoryTaken, match="store itself|default directory of every run"):
        check_subdir(store, subdir)


def test_a_directory_marked_by_another_run_is_refused(store: Path) -> None:
    (store / "exp" / "a").mkdir(parents=True)
    (store / "exp" / "a" / RUN_ID_FILE).write_text("a-0001\n")
    with pytest.raises(DirectoryTaken, match="'exp/a' is the directory of run a-0001"):
        check_subdir(store, "exp/a")
    with pytest.raises(DirectoryTaken, match="'exp/a/b' lies inside 'exp/a', the directory of run a-0001"):
        check_subdir(store, "exp/a/b")
    with pytest.raises(DirectoryTaken, match="'exp' holds 'exp/a', the directory of run a-0001"):
        check_subdir(store, "exp")  # it holds a run's directory


def test_an_ancestor_of_a_deeper_run_directory_is_refused(store: Path) -> None:
    (store / "deep" / "x" / "y").mkdir(parents=True)
    (store / "deep" / "x" / "y" / RUN_ID_FILE).write_text("y-1\n")
    assert run_dir_problem(store, store / "deep") == (
        "'deep' already holds files (x): a run's directory must be new or empty"
    )


def test_checkpoints_of_a_run_without_a_marker_are_recognised(store: Path) -> None:
    _checkpoint(store / "old" / "policy" / "v2", "old-run")
    _checkpoint(store / "old" / "final", "old-run")
    assert run_dir_problem(store, store / "old") == "'old' is the directory of run old-run"
    problem = run_dir_problem(store, store / "old" / "policy" / "v2" / "x")
    assert problem == "'old/policy/v2/x' lies inside 'old', the directory of run old-run"
    _checkpoint(store / "older" / "trainer" / "step3", "older-run")
    assert run_dir_problem(store, store / "older") == "'older' is the directory of run older-run"


def test_a_legacy_run_at_the_store_root_owns_everything_below(store: Path) -> None:
    _checkpoint(store / "trainer" / "step1", "root-run")
    assert run_dir_problem(store, store / "runs" / "new-1") == (
        "'runs/new-1' lies inside '.', the directory of run root-run"
    )


def test_a_directory_with_other_files_or_a_file_is_refused(store: Path) -> None:
    (store / "notes").mkdir()
    (store / "notes" / "README").write_text("mine")
    assert run_dir_problem(store, store / "notes") == (
        "'notes' already holds files (README): a run's directory must be new or empty"
    )
    assert run_dir_problem(store, store / "models") is not None
    (store / "plain").write_text("x")
    assert run_dir_problem(store, store / "plain") == "'plain' exists and is not a directory"


def test_a_directory_named_like_a_checkpoint_folder_is_not_a_run_by_itself(store: Path) -> None:
    (store / "team" / "policy" / "notes").mkdir(parents=True)  # no numbered version, no manifest
    assert run_dir_problem(store, store / "team" / "mine") is None


def test_record_clashes_same_ancestor_descendant(store: Path) -> None:
    records = [("a-1", str(store / "exp" / "a")), ("d-1", str(store / "runs" / "d-1"))]
    assert record_problem(records, store, "new", store / "exp" / "a") == "'exp/a' is the directory of run a-1"
    assert record_problem(records, store, "new", store / "exp") == "'exp' holds the directory of run a-1"
    assert record_problem(records, store, "new", store / "exp" / "a" / "b") == (
        "'exp/a/b' lies inside the directory of run a-1"
    )
    assert record_problem(records, store, "new", store / "exp" / "b") is None
    assert record_problem(records, store, "new", store / "runs" / "new") is None  # siblings under runs/
    assert record_problem(records, store, "a-1", store / "exp" / "a") is None   # its own record


def test_claim_marks_the_directory_and_refuses_a_second_claim(store: Path, redis_client: redis.Redis) -> None:
    run_dir = store / "exp" / "a"
    claim_run_dir(redis_client, store, "a-1", run_dir)
    assert (run_dir / RUN_ID_FILE).read_text() == "a-1\n"
    with pytest.raises(DirectoryTaken, match="run a-1"):
        claim_run_dir(redis_client, store, "b-1", run_dir)
    assert (run_dir / RUN_ID_FILE).read_text() == "a-1\n"


def test_claim_compares_with_every_run_record(store: Path, redis_client: redis.Redis) -> None:
    gone = store / "exp" / "a"  # the record remains, its directory was deleted
    redis_client.set(keys.run_key("a-1"), json.dumps({"id": "a-1", "run_dir": str(gone), "state": "succeeded"}))
    redis_client.set(keys.run_key("broken"), "{not json")
    redis_client.rpush(keys.RUN_INDEX, "a-1", "broken", "missing")
    assert recorded_run_dirs(redis_client) == [("a-1", str(gone))]
    for run_dir in (gone, store / "exp", gone / "sub"):
        with pytest.raises(DirectoryTaken, match="run a-1"):
            claim_run_dir(redis_client, store, "b-1", run_dir)
    assert not gone.exists() and not (store / "exp").exists()  # a refused claim leaves no trace
    claim_run_dir(redis_client, store, "b-1", store / "exp2")
    assert (store / "exp2" / RUN_ID_FILE).read_text() == "b-1\n"
