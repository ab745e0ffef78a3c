"""The trainer trains a run only in a directory of its own: a RUN_ID marker or a checkpoint (manifest or trainer
state) naming another run id fails the run through FailRun, before anything is trained, resumed or overwritten.
The trainer service runs against real Redis and a stand-in controller (gRPC)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from trainer_harness import StandInController, activate, controller_server, redis_url, running_trainer, wait_for

from semirl.core.checkpoint_store import MANIFEST, staged_directory
from semirl.core.ownership import RUN_ID_FILE
from semirl.core.runstate import load_run
from semirl.spec import RunSpec
from semirl.trainer.checkpoint_writer import TrainerCheckpoints
from semirl.trainer.engine import STATE_FILE

RUN_ID = "mine-0001"
OTHER = "other-0001"


def _spec(steps: int) -> RunSpec:
    return RunSpec.model_validate({
        "name": "mine", "model": {"path": "unused-model"}, "data": {"train": {"path": "unused.jsonl"}},
        "sync": {"interval": 1}, "train": {"steps": steps, "batch_prompts": 2},
        "checkpoint": {"subdir": "shared"},
    })


def _write_checkpoints(run_dir: Path, run_id: str, step: int, state_run_id: str | None = None) -> None:
    """Trainer state, policy version and (at the last step) final policy of `step`, as TrainerCheckpoints writes."""
    with staged_directory(run_dir / "trainer" / f"step{step}", {"run_id": run_id, "step": step}) as staging:
        state = {"run_id": state_run_id or run_id, "step": step, "consumed_prompt_ids": [], "counters": {}}
        (staging / STATE_FILE).write_text(json.dumps(state))
    with staged_directory(run_dir / "policy" / f"v{step}", {"run_id": run_id, "version": step}) as staging:
        (staging / "model.safetensors").write_bytes(b"other weights")


def _train(client: redis.Redis, store: Path, spec: RunSpec) -> StandInController:
    """Run the trainer service on the active run RUN_ID until the run is done with; the controller's calls."""
    activate(client, RUN_ID, spec, (store / "shared").resolve(), "unused-model")
    controller = StandInController(client)
    server = controller_server(controller)
    try:
        with running_trainer(redis_url(client), store, server.port, "trainer-own") as service:
            wait_for(lambda: RUN_ID in service.finished, timeout=60, what="the trainer never gave the run up")
            time.sleep(0.3)  # it must not pick the run up again
    finally:
        server.stop()
    return controller


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["finished", "resumable", "state_only", "marker"])
def test_a_directory_of_another_run_fails_the_run_untouched(
    tmp_path: Path, redis_client: redis.Redis, case: str
) -> None:
    store = tmp_path / "store"
    run_dir = store / "shared"
    steps = 3
    if case == "finished":  # the other run's last step and final policy: the run would "succeed" untrained
        _write_checkpoints(run_dir, OTHER, steps)
        with staged_directory(run_dir / "final", {"run_id": OTHER, "source": f"v{steps}"}) as staging:
            (staging / "model.safetensors").write_bytes(b"other final weights")
    elif case == "resumable":  # a step to resume from, the rest to train on top of the other run's state
        _write_checkpoints(run_dir, OTHER, 1)
    elif case == "state_only":  # the manifest says this run, the trainer state another
        _write_checkpoints(run_dir, RUN_ID, 1, state_run_id=OTHER)
    else:
        run_dir.mkdir(parents=True)
        (run_dir / RUN_ID_FILE).write_text(f"{OTHER}\n")
    before = _snapshot(run_dir)

    controller = _train(redis_client, store, _spec(steps))

    assert len(controller.fails) == 1 and controller.fails[0].run_id == RUN_ID
    assert OTHER in controller.fails[0].error and RUN_ID in controller.fails[0].error
    record = load_run(redis_client, RUN_ID)
    assert record is not None and record.state == "failed" and OTHER in (record.error or "")
    assert controller.reports == [] and controller.commits == []  # nothing trained, nothing committed
    assert _snapshot(run_dir) == before  # the other run's checkpoints and final policy are as they were


def test_own_checkpoints_and_marker_are_the_run_s(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_dir = store / "shared"
    checkpoints = TrainerCheckpoints(store, RUN_ID, "shared", "unused-model")
    assert checkpoints.foreign_owner() is None  # no directory yet
    run_dir.mkdir(parents=True)
    (run_dir / RUN_ID_FILE).write_text(f"{RUN_ID}\n")
    _write_checkpoints(run_dir, RUN_ID, 1)
    _write_checkpoints(run_dir, RUN_ID, 2)
    (run_dir / "trainer" / "step3").mkdir()  # torn: no manifest, never resumed from
    assert checkpoints.foreign_owner() is None
    assert checkpoints.latest_step() == 2


def test_a_checkpoint_recording_no_run_id_is_not_the_run_s(tmp_path: Path) -> None:
    store = tmp_path / "store"
    policy = store / "shared" / "policy" / "v1"
    with staged_directory(policy, {"version": 1}) as staging:
        (staging / "model.safetensors").write_bytes(b"w")
    problem = TrainerCheckpoints(store, RUN_ID, "shared", "unused-model").foreign_owner()
    assert problem is not None and "records no run id, not mine-0001" in problem and str(policy) in problem
    assert json.loads((policy / MANIFEST).read_text())["version"] == 1
