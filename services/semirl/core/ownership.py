"""A run owns its checkpoint directory (docs/architecture.md, checkpoints).

`checkpoint.subdir` may name any directory inside the store. Shared with another run, a directory makes the new
run resume from that run's checkpoints (or "succeed" at once on its last step) and overwrite its final policy, so
a run's directory is refused when it

- is the store root or `<store>/runs` (the parent of every default run directory);
- lies inside another run's directory: an ancestor holds a RUN_ID marker or checkpoints;
- already exists and is not empty: whatever is in it may be another run's, possibly one whose record is gone (a
  descendant run directory makes its ancestors non-empty, so this also refuses the ancestors of runs);
- is, holds or lies inside the directory of any run record in Redis, finished ones included.

At creation (under the scheduler's lock) the controller writes `<run_dir>/RUN_ID`, created exclusively: the marker
claims the directory on the store itself, so the claim holds before the run has written any checkpoint and after
its record is gone (a Redis without persistence), and two controllers cannot both claim one directory. The trainer
refuses a directory whose marker or checkpoints name another run (trainer/checkpoint_writer.py, `foreign_owner`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import redis

from semirl.core import keys
from semirl.core.checkpoint_store import MANIFEST, CheckpointError, RunCheckpoints

RUN_ID_FILE = "RUN_ID"
RUNS = "runs"  # default run directories are <store>/runs/<run_id>


class DirectoryTaken(CheckpointError):  # noqa: N818
    """A run's checkpoint directory is, or overlaps, a directory that is not the run's own."""


def marker_run_id(directory: Path) -> str | None:
    """The run id in `directory`'s RUN_ID marker; None without one."""
    try:
        return (directory / RUN_ID_FILE).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def recorded_run_id(json_file: Path) -> str | None:
    """The "run_id" a JSON record (a checkpoint's MANIFEST.json, a trainer state) holds; None when it has none or
    cannot be read."""
    try:
        value = json.loads(json_file.read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def manifest_run_id(directory: Path) -> str | None:
    """The run id a checkpoint's MANIFEST.json records; None when it has none or cannot be read."""
    return recorded_run_id(directory / MANIFEST)


def run_owner(store: Path, directory: Path) -> str | None:
    """Who `directory` belongs to when it is a run's directory ("run <id>"); None when it does not look like one.

    A run directory has a RUN_ID marker (runs created since markers exist) or a run's checkpoints: a numbered
    policy version or trainer state, or a final policy.
    """
    marked = marker_run_id(directory)
    if marked is not None:
        return f"run {marked}"
    paths = RunCheckpoints(store, "probe", str(directory.relative_to(store)))
    checkpoints = [paths.policy_dir(v) for v in reversed(paths.policy_versions())]
    checkpoints += [paths.trainer_dir(s) for s in reversed(paths.trainer_steps())]
    if (paths.final_dir / MANIFEST).is_file():
        checkpoints.insert(0, paths.final_dir)
    if not checkpoints:
        return None
    for checkpoint in checkpoints:
        recorded = manifest_run_id(checkpoint)
        if recorded is not None:
            return f"run {recorded}"
    return "a run (its checkpoints record no run id)"


def run_dir_problem(store: Path, run_dir: Path) -> str | None:
    """Why `run_dir` cannot be a new run's own directory, judged from the store alone; None when it can."""
    store, run_dir = store.resolve(), run_dir.resolve()
    if run_dir == store:
        return "is the checkpoint store itself, not a run directory of its own"
    where = str(run_dir.relative_to(store))
    if run_dir == store / RUNS:
        return f"{where!r} holds the default directory of every run, it is not a run directory of its own"
    for ancestor in run_dir.parents:
        if not ancestor.is_relative_to(store):
            break
        owner = run_owner(store, ancestor)
        if owner is not None:
            inside = str(ancestor.relative_to(store))
            return f"{where!r} lies inside {inside!r}, the directory of {owner}"
    if not run_dir.exists():
        return None
    if not run_dir.is_dir():
        return f"{where!r} exists and is not a directory"
    entries = sorted(entry.name for entry in run_dir.iterdir())
    if not entries:
        return None
    owner = run_owner(store, run_dir)
    if owner is not None:
        return f"{where!r} is the directory of {owner}"
    for entry in entries:  # name a run directory just below, if there is one (deeper ones are not searched)
        child = run_dir / entry
        owner = run_owner(store, child) if child.is_dir() and not child.is_symlink() else None
        if owner is not None:
            return f"{where!r} holds {str(child.relative_to(store))!r}, the directory of {owner}"
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    return f"{where!r} already holds files ({shown}): a run's directory must be new or empty"


def record_problem(records: Iterable[tuple[str, str]], store: Path, run_id: str, run_dir: Path) -> str | None:
    """Why `run_dir` clashes with the directory of another run in `records` ((id, run_dir) pairs); None if not."""
    run_dir = run_dir.resolve()
    where = repr(str(run_dir.relative_to(store.resolve())))
    for other_id, other_dir in records:
        if other_id == run_id:
            continue
        other = Path(other_dir).resolve()
        if other == run_dir:
            return f"{where} is the directory of run {other_id}"
        if other.is_relative_to(run_dir):
            return f"{where} holds the directory of run {other_id}"
        if run_dir.is_relative_to(other):
            return f"{where} lies inside the directory of run {other_id}"
    return None


def recorded_run_dirs(client: redis.Redis) -> list[tuple[str, str]]:
    """(id, run_dir) of every run record in Redis, whatever its state."""
    run_ids = [r.decode() if isinstance(r, bytes) else r for r in client.lrange(keys.RUN_INDEX, 0, -1)]
    if not run_ids:
        return []
    found = []
    for run_id, raw in zip(run_ids, client.mget([keys.run_key(r) for r in run_ids]), strict=True):
        try:
            run_dir = json.loads(raw).get("run_dir") if raw else None
        except (ValueError, AttributeError):  # a record that does not load names no directory
            continue
        if isinstance(run_dir, str):
            found.append((run_id, run_dir))
    return found


def check_subdir(store: Path, subdir: str | None) -> None:
    """Raise DirectoryTaken when a spec's `checkpoint.subdir` cannot be a new run's own directory.

    From the store alone, at validation; the default directory (a fresh run id) is judged at creation.
    """
    if not subdir:
        return
    problem = run_dir_problem(store, RunCheckpoints(store, "probe", subdir).run_dir)
    if problem is not None:
        raise DirectoryTaken(problem)


def claim_run_dir(client: redis.Redis, store: Path, run_id: str, run_dir: Path) -> None:
    """Make `run_dir` the directory of the new run `run_id` (its RUN_ID marker), or raise DirectoryTaken.

    Call it under the scheduler's lock, before the run's record is saved.
    """
    problem = record_problem(recorded_run_dirs(client), store, run_id, run_dir) or run_dir_problem(store, run_dir)
    if problem is not None:
        raise DirectoryTaken(problem)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with (run_dir / RUN_ID_FILE).open("x") as marker:
            marker.write(f"{run_id}\n")
    except FileExistsError:
        claimed_by = marker_run_id(run_dir)
        raise DirectoryTaken(f"{run_dir.name!r} was claimed meanwhile by run {claimed_by}") from None
