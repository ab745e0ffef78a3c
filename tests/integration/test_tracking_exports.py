"""Run tracking against real servers the test starts: an `mlflow server` (sqlite backend), W&B in offline mode (its
transaction log read back), and moto's S3-compatible server (`python -m moto.server`, a separate process) for the
final/ and best/ export. The run is a real record in real Redis with step reports stored as the controller stores
them (RunStore); the exporter thread's poll is called directly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from wandb_records import history, of_kind

from semirl.controller.run_store import RunStore
from semirl.controller.tracking import DONE_SET, RunTracking, TrackingSettings, tracking_key
from semirl.controller.tracking_exporters import exporters_from
from semirl.core.runstate import BestCheckpoint, EvalResult
from semirl.proto import controller_pb2
from semirl.spec import RunSpec

STEPS = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(argv: list[str], url: str, log: Path, timeout: float = 120) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{argv[:3]} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{argv[:3]} did not answer at {url}: {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, 15)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    process = _serve([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                      "--workers", "1", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                      "--artifacts-destination", str(root / "artifacts")],
                     f"http://127.0.0.1:{port}/health", root / "server.log")
    yield f"http://127.0.0.1:{port}"
    _stop(process)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("moto")
    port = _free_port()
    process = _serve([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                     f"http://127.0.0.1:{port}/moto-api/", root / "server.log")
    yield f"http://127.0.0.1:{port}"
    _stop(process)


def _finished_run(client: redis.Redis, store: Path) -> tuple[RunStore, str]:
    """A run of STEPS reported steps, two evaluations, a final/ and a best/ policy, succeeded."""
    run_store = RunStore(client, store)
    spec = RunSpec.model_validate({
        "name": "tracked", "model": {"path": "seed"}, "data": {"train": {"path": "t.jsonl"}},
        "sync": {"interval": 2}, "train": {"steps": STEPS, "batch_prompts": 2}, "dpo": {"beta": 0.25},
    })
    record = run_store.create(spec)
    record.state, record.started_at = "running", time.time()
    run_store.save(record)
    for step in range(1, STEPS + 1):
        record.step = step
        report = controller_pb2.StepReport(run_id=record.id, step=step,
                                           metrics={"loss": 1.0 / step, "margin": 0.1 * step})
        run_store.append_step(report, record)
    for step, accuracy in ((0, 0.5), (STEPS, 0.75)):
        record.evals.append(EvalResult(step=step, eval_set="math", policy_version=step, accuracy=accuracy,
                                       stderr=0.01, prompts=10, samples_per_prompt=2, samples_expected=20,
                                       samples_scored=20, mean_response_tokens=12.0, failed_prompts=0))
    for what in ("final", "best"):
        directory = Path(record.run_dir) / what
        directory.mkdir(parents=True)
        (directory / "model.safetensors").write_bytes(os.urandom(3 * 1024 * 1024) + what.encode())
        (directory / "config.json").write_text('{"model_type": "llama"}')
    record.final_path = str(Path(record.run_dir) / "final")
    record.best = BestCheckpoint(step=STEPS, eval_set="math", metric="accuracy", value=0.75,
                                 path=str(Path(record.run_dir) / "best"))
    record.state, record.finished_at, record.counters = "succeeded", time.time(), {"groups_trained": 8}
    run_store.save(record)
    return run_store, record.id


def test_a_run_is_exported_to_mlflow_wandb_and_s3(
    redis_client: redis.Redis, tmp_path: Path, mlflow_uri: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3
    from mlflow.tracking import MlflowClient

    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1", "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="runs")
    settings = TrackingSettings.from_env({
        "SEMIRL_MLFLOW_TRACKING_URI": mlflow_uri, "SEMIRL_MLFLOW_EXPERIMENT": "semirl-test",
        "SEMIRL_WANDB_MODE": "offline", "SEMIRL_WANDB_DIR": str(tmp_path / "wandb"),
        "SEMIRL_ARTIFACT_URI": "s3://runs/semirl", "SEMIRL_S3_ENDPOINT_URL": s3_endpoint,
    })
    run_store, run_id = _finished_run(redis_client, tmp_path / "store")
    tracking = RunTracking(redis_client, run_store, exporters_from(settings, tmp_path / "store"), poll_s=0.1)
    tracking.poll_once()
    assert redis_client.sismember(DONE_SET, run_id), redis_client.hgetall(tracking_key(run_id))

    # MLflow: one run, tagged, the spec as params, every step's metrics at their step, evals, the final status
    mlflow = MlflowClient(tracking_uri=mlflow_uri)
    experiment = mlflow.get_experiment_by_name("semirl-test")
    (run,) = mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.`semirl.run_id` = '{run_id}'")
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.params["dpo.beta"] == "0.25" and run.data.params["train.steps"] == str(STEPS)
    losses = sorted((m.step, m.value) for m in mlflow.get_metric_history(run.info.run_id, "loss"))
    assert losses == [(step, pytest.approx(1.0 / step)) for step in range(1, STEPS + 1)]
    accuracy = sorted((m.step, m.value) for m in mlflow.get_metric_history(run.info.run_id, "eval/math/accuracy"))
    assert accuracy == [(0, 0.5), (STEPS, 0.75)]
    assert run.data.metrics["run/groups_trained"] == 8 and run.data.metrics["best/accuracy"] == 0.75

    # W&B offline: the run's transaction log holds the config, every step, the evals, the summary, exit code 0
    (log,) = (tmp_path / "wandb").rglob(f"run-{run_id}.wandb")
    rows = history(log)
    assert [(int(r["_step"]), float(r["loss"])) for r in rows if "loss" in r] == [
        (step, pytest.approx(1.0 / step)) for step in range(1, STEPS + 1)]
    assert sorted((int(r["eval/step"]), float(r["eval/math/accuracy"])) for r in rows if "eval/step" in r) == [
        (0, 0.5), (STEPS, 0.75)]
    config = {item.key: item.value_json for item in of_kind(log, "run")[0].config.update}
    assert '"beta":0.25' in config["dpo"].replace(" ", "")
    summary = {i.key: i.value_json for s in of_kind(log, "summary") for i in s.update}
    assert summary["state"] == '"succeeded"' and float(summary["run/groups_trained"]) == 8
    assert [e.exit_code for e in of_kind(log, "exit")] == [0]

    # S3: final/ and best/, byte for byte
    for what in ("final", "best"):
        local = Path(run_store.get(run_id).run_dir) / what / "model.safetensors"
        body = s3.get_object(Bucket="runs", Key=f"semirl/{run_id}/{what}/model.safetensors")["Body"].read()
        assert body == local.read_bytes()
        assert s3.head_object(Bucket="runs", Key=f"semirl/{run_id}/{what}/config.json")["ContentLength"] > 0

    # done: a later poll exports nothing twice
    tracking.poll_once()
    assert len(mlflow.search_runs([experiment.experiment_id])) == 1
    assert len(mlflow.get_metric_history(run.info.run_id, "loss")) == STEPS


def test_a_tracking_server_that_is_down_delays_the_export_without_losing_it(
    redis_client: redis.Redis, tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    run_store, run_id = _finished_run(redis_client, tmp_path / "store")
    down = f"http://127.0.0.1:{_free_port()}"
    dead = RunTracking(redis_client, run_store, exporters_from(
        TrackingSettings(mlflow_tracking_uri=down, mlflow_experiment="semirl-retry"), tmp_path), poll_s=0.1)
    dead.poll_once()  # logs a warning, records nothing as done
    assert not redis_client.sismember(DONE_SET, run_id)
    live = RunTracking(redis_client, run_store, exporters_from(
        TrackingSettings(mlflow_tracking_uri=mlflow_uri, mlflow_experiment="semirl-retry"), tmp_path), poll_s=0.1)
    live.poll_once()
    assert redis_client.sismember(DONE_SET, run_id)
    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(tracking_uri=mlflow_uri)
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("semirl-retry").experiment_id])
    assert len(mlflow.get_metric_history(run.info.run_id, "loss")) == STEPS


def test_settings_come_from_the_environment_and_refuse_a_bad_uri() -> None:
    assert not TrackingSettings.from_env({}).enabled
    settings = TrackingSettings.from_env({"SEMIRL_WANDB_MODE": "offline", "SEMIRL_TRACKING_POLL_S": "2.5"})
    assert settings.enabled and settings.poll_s == 2.5
    with pytest.raises(ValueError, match="artifact_uri"):
        TrackingSettings.from_env({"SEMIRL_ARTIFACT_URI": "gs://bucket"})
