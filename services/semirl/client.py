"""A small client of the controller's REST API: submit a spec, follow a run with a progress bar."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

TERMINAL = {"succeeded", "failed", "cancelled"}


class ControllerClient:
    """`token`: the controller's API token (default: $SEMIRL_API_TOKEN), sent as a Bearer header."""

    def __init__(self, url: str, timeout: float = 30.0, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        token = token if token is not None else os.environ.get("SEMIRL_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def submit(self, spec_path: Path) -> dict[str, Any]:
        content_type = "application/json" if spec_path.suffix == ".json" else "application/yaml"
        return self.submit_body(spec_path.read_bytes(), content_type)

    def submit_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.submit_body(json.dumps(spec).encode(), "application/json")

    def submit_body(self, body: bytes, content_type: str) -> dict[str, Any]:
        response = self.http.post("/v1/runs", content=body, headers={"Content-Type": content_type})
        if response.status_code == 422:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                for d in response.json().get("detail", [])
            )
            raise ValueError(f"invalid run spec: {problems}")
        if response.status_code == 401:
            raise PermissionError("the controller wants an API token: set SEMIRL_API_TOKEN")
        response.raise_for_status()
        return response.json()

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/runs/{run_id}")
        response.raise_for_status()
        return response.json()

    def find_run(self, run_id: str) -> dict[str, Any] | None:
        """The run, or None when the controller has no such run (any other failure raises)."""
        response = self.http.get(f"/v1/runs/{run_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def runs(self) -> list[dict[str, Any]]:
        response = self.http.get("/v1/runs")
        response.raise_for_status()
        body = response.json()
        return body["runs"] if isinstance(body, dict) else body

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        response = self.http.get(f"/v1/runs/{run_id}/metrics")
        response.raise_for_status()
        body = response.json()
        return body["metrics"] if isinstance(body, dict) else body

    def cancel(self, run_id: str) -> dict[str, Any]:
        response = self.http.post(f"/v1/runs/{run_id}/cancel")
        response.raise_for_status()
        return response.json()

    def wait(
        self, run_id: str, timeout: float = 3600.0, *, progress: bool = False, poll: float = 0.5
    ) -> dict[str, Any]:
        """Poll until the run ends; with progress, show step, policy version, reward and accuracy."""
        deadline = time.monotonic() + timeout
        bar: tqdm | None = None
        record = self.run(run_id)
        try:
            while record["state"] not in TERMINAL:
                if progress:
                    bar = _update_bar(bar, record)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"run {run_id} still {record['state']} after {timeout:.0f}s")
                time.sleep(poll)
                record = self.run(run_id)
            if progress:
                bar = _update_bar(bar, record)
        finally:
            if bar is not None:
                bar.close()
        return record


def _update_bar(bar: tqdm | None, record: dict[str, Any]) -> tqdm:
    total = record["spec"]["train"]["steps"]
    if bar is None:
        bar = tqdm(total=total, desc=record["name"], unit="step", dynamic_ncols=True)
    metrics = record.get("latest_metrics") or {}
    bar.n = record.get("step", 0)
    held_out = latest_eval(record)
    bar.set_postfix(
        state=record["state"],
        policy=f"v{record.get('policy_version', 0)}",
        reward=f"{metrics.get('reward_mean', float('nan')):.2f}",
        held_out=f"{_percent(held_out)}@{held_out['step']}" if held_out else "-",
        refresh=False,
    )
    bar.refresh()
    return bar


def latest_eval(record: dict[str, Any]) -> dict[str, Any] | None:
    """The newest evaluation of the run's first evaluation set."""
    evals = record.get("evals") or []
    if not evals:
        return None
    first_set = evals[0]["eval_set"]
    return max((e for e in evals if e["eval_set"] == first_set), key=lambda e: e["step"])


def status_lines(record: dict[str, Any]) -> list[str]:
    """A run at a glance: state and progress, the newest step's figures, queues, replicas, evaluations."""
    steps = record["spec"]["train"]["steps"]
    step = record.get("step", 0)
    done = int(30 * step / steps) if steps else 0
    lines = [f"{record['id']}  {record['state']}  [{'#' * done}{'.' * (30 - done)}] step {step}/{steps}  "
             f"policy v{record.get('policy_version', 0)}  syncs {record.get('syncs', 0)}"]
    metrics = record.get("latest_metrics") or {}
    shown = [f"{name} {metrics[name]:.4g}" for name in ("reward_mean", "loss", "margin", "kl", "response_tokens",
                                                        "staleness", "step_seconds", "wait_seconds")
             if isinstance(metrics.get(name), int | float)]
    if shown:
        lines.append("latest step: " + "  ".join(shown))
    queues = record.get("queues") or {}
    if queues:
        lines.append("queues (lag/pending): " + "  ".join(f"{name} {q['lag']}/{q['pending']}"
                                                          for name, q in queues.items()))
    replicas = record.get("replicas") or {}
    if replicas:
        lines.append("replicas (ready/total): " + "  ".join(f"{name} {r['ready']}/{r['total']}"
                                                           for name, r in replicas.items()))
    if record.get("error"):
        lines.append(f"error: {record['error']}")
    return [*lines, "", *eval_table_lines(record)]


def _percent(result: dict[str, Any]) -> str:
    stderr = result.get("stderr")
    spread = f" ± {100 * stderr:.1f}" if stderr is not None else ""
    return f"{100 * result['accuracy']:.1f}%{spread}"


def eval_lines(record: dict[str, Any]) -> list[str]:
    """Before/after accuracy per evaluation set: the first and the last evaluated step (± one standard error)."""
    by_set: dict[str, list[dict[str, Any]]] = {}
    for result in sorted(record.get("evals") or [], key=lambda e: e["step"]):
        by_set.setdefault(result["eval_set"], []).append(result)
    lines = []
    for name, results in by_set.items():
        seed, final = results[0], results[-1]
        if seed.get("mean_score") is not None and final.get("mean_score") is not None:
            lines.append(
                f"held-out reward-model score on {name}: step {seed['step']} {seed['mean_score']:.3f} "
                f"({seed['mean_score_per_token']:.4f}/token) -> step {final['step']} {final['mean_score']:.3f} "
                f"({final['mean_score_per_token']:.4f}/token), {seed['prompts']} prompts x "
                f"{seed['samples_per_prompt']} samples")
            continue
        delta = 100 * (final["accuracy"] - seed["accuracy"])
        failed = sum(r["failed_prompts"] for r in results)
        lines.append(
            f"held-out accuracy on {name}: step {seed['step']} {_percent(seed)} -> step {final['step']} "
            f"{_percent(final)} ({delta:+.1f} points, {seed['prompts']} prompts x {seed['samples_per_prompt']} samples"
            + (f", {failed} failed generations counted as wrong" if failed else "") + ")"
        )
    return lines


def eval_table_lines(record: dict[str, Any]) -> list[str]:
    """Every evaluation of a run: one row per set and evaluated step."""
    rows = [f"{'set':<16} {'step':>6} {'policy':>7} {'accuracy':>16} {'prompts':>8} {'scored':>15} {'failed':>7}"]
    for r in record.get("evals") or []:
        scored = f"{r['samples_scored']}/{r['samples_expected']}"
        rows.append(f"{r['eval_set']:<16} {r['step']:>6} {'v' + str(r['policy_version']):>7} {_percent(r):>16} "
                    f"{r['prompts']:>8} {scored:>15} {r['failed_prompts']:>7}")
    return rows if len(rows) > 1 else ["no evaluations yet"]


def summary_lines(record: dict[str, Any], wall_seconds: float) -> list[str]:
    lines = eval_lines(record)
    lines.append(f"run {record['id']}: {record['state']}")
    steps, syncs = record.get("step", 0), record.get("syncs", 0)
    lines.append(f"steps: {steps}   weight syncs: {syncs}   wall time: {wall_seconds:.0f}s")
    if record.get("final_path"):
        lines.append(f"final model: {record['final_path']}")
    best = record.get("best")
    if best:
        lines.append(f"best model: {best['path']} (step {best['step']}, {best['metric']} {best['value']:.4f} on "
                     f"{best['eval_set']})")
    if record.get("error"):
        lines.append(f"error: {record['error']}")
    return lines
