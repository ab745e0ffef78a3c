"""`semirl sweep` end to end on the real stack (controller, vLLM generator exporting Prometheus metrics, math-verify
verifier, DeepSpeed trainer): a two-setting, one-seed, few-step grid writes its table and plots, and a re-run
resumes — finished cells are not run again and a cell left in flight is followed, not submitted twice."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from png_pixels import colour_pixels

from semirl.cli import main
from semirl.client import ControllerClient
from semirl.local.stack import LocalStack

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

MATPLOTLIB_FIRST_LINE = "#1f77b4"  # "C0", the first setting's line colour


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[LocalStack]]) -> Iterator[LocalStack]:
    with start_stack("sweep", generators=1, verifiers=1, metrics=True) as local:
        yield local


def test_a_small_sweep_writes_its_table_and_plots_and_resumes(stack: LocalStack, tmp_path: Path,
                                                             write_spec: Callable[..., Path]) -> None:
    base = write_spec("sweep", interval=1, steps=2)
    out = tmp_path / "results"
    args = ["sweep", "--url", stack.url, "--spec", str(base), "--set", "sync.interval=1,offline",
            "--set", "train.steps=2", "--seeds", "1", "--out", str(out), "--quiet",
            *(arg for url in stack.metrics_urls("generator-") for arg in ("--generator-metrics", url))]
    client = ControllerClient(stack.url)

    assert main(args) == 0
    table = (out / "table.md").read_text()
    assert "| sync.interval=1 | 1 |" in table and "| sync.interval=offline | 1 |" in table
    rows = json.loads((out / "table.json").read_text())["rows"]
    assert [r["setting"] for r in rows] == ["sync.interval=1", "sync.interval=offline"]
    for row in rows:
        (eval_set,) = row["eval_sets"]
        assert 0.0 <= eval_set["accuracy"]["mean"] <= 1.0
        assert 0.0 <= row["generator_idle_fraction"]["mean"] <= 1.0
        assert row["train_samples_per_s"]["mean"] > 0
    assert rows[0]["syncs"]["mean"] >= 1 and rows[1]["syncs"]["mean"] == 0
    for plot in ("accuracy_vs_step.png", "accuracy_vs_time.png", "length_entropy.png"):
        assert colour_pixels((out / plot).read_bytes(), MATPLOTLIB_FIRST_LINE) > 50, f"{plot}: no first-setting line"
    assert len(client.runs()) == 2
    assert all(run["name"].startswith("sweep-") for run in client.runs())

    # A re-run of a finished sweep runs nothing.
    online = out / "runs" / "sync-interval-1-seed0.json"
    offline = out / "runs" / "sync-interval-offline-seed0.json"
    before = online.read_text()
    assert main(args) == 0
    assert len(client.runs()) == 2 and online.read_text() == before

    # Stopped while following a run: the run is followed again, not submitted again.
    run_id = json.loads(online.read_text())["run_id"]
    online.unlink()
    (out / "runs" / "sync-interval-1-seed0.submitted").write_text(run_id)
    # Stopped after a submission whose id was never noted: the run is found by its name.
    offline_run = json.loads(offline.read_text())["run_id"]
    offline.unlink()
    assert main(args) == 0
    assert json.loads(online.read_text())["run_id"] == run_id
    assert json.loads(offline.read_text())["run_id"] == offline_run
    assert len(client.runs()) == 2
    assert not list((out / "runs").glob("*.submitted"))

    # Another plan into the same directory is refused before anything runs.
    assert main([*args, "--seeds", "2"]) == 2
    assert len(client.runs()) == 2


def test_run_and_status_show_the_essentials_and_json_for_scripts(
        stack: LocalStack, write_spec: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec("cli-json", interval=1, steps=2)
    assert main(["run", str(spec), "--url", stack.url, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["state"] == "succeeded" and record["step"] == 2 and record["evals"]

    assert main(["status", record["id"], "--url", stack.url]) == 0
    shown = capsys.readouterr().out
    assert f"{record['id']}  succeeded  [{'#' * 30}] step 2/2  policy v2" in shown
    assert "latest step: reward_mean" in shown
    assert shown.count("\n") >= 4 + len(record["evals"])  # the evaluations table, a row per set and step

    assert main(["status", "--url", stack.url, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert record["id"] in [run["id"] for run in listed]
