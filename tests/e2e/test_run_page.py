"""The run page in headless Chromium against a real stack run (docs/architecture.md, decision 45).

The controller has an API token; a short DPO run (6 steps, s = 2: two syncs, three evaluations) is submitted with
it, and one page, opened before the run starts, is watched until the run ends. The trainer is paused (SIGSTOP)
after its first step until the page shows that step, so the page is seen mid-run for sure; it must follow the run
without reloading, and at the end show every step in every plot, the evaluations, the syncs, the replicas and the
queues. A screenshot of it must have each plot's lines in their colours. Debian's `chromium` package is the browser
(`make tools`); without it the test is skipped, and fails when CI is set.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from headless_chromium import CHROMIUM, Page, chromium
from png_pixels import colour_pixels

from semirl.client import ControllerClient
from semirl.local.stack import LocalStack, ServiceProcess

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]

TOKEN = "run-page-token"
STEPS = 6
STEP_PLOTS = {  # plot -> the series a DPO run reports in it, one vertex per step
    "reward": {"reward_mean"},
    "loss": {"loss"},
    "kl": {"margin"},  # GRPO's kl is not reported by DPO: no line for it
    "length": {"response_tokens"},
    "staleness": {"staleness", "staleness_mean", "staleness_max"},
    "time": {"wait_seconds", "time_reference_s", "time_forward_backward_s", "time_optimizer_s", "other_train_s",
             "checkpoint_policy_s", "checkpoint_commit_s", "checkpoint_state_s"},
}
MAYBE = {"time": {"reload_s"}}  # only when the generator's load of a synced version was in before the step's report
# What the page shows, read in one evaluation: each plot's lines (vertex count, colour) and where its SVG lies in
# the document, the tables' row counts, the state badge.
PAGE_SUMMARY = """(() => {
  const rows = id => document.querySelectorAll(`#${id} tr`).length - 1;
  const plots = {};
  for (const figure of document.querySelectorAll("figure.plot")) {
    const box = figure.querySelector("svg").getBoundingClientRect();
    plots[figure.dataset.plot] = {
      empty: figure.classList.contains("empty"),
      rect: [box.left + scrollX, box.top + scrollY, box.width, box.height],
      lines: [...figure.querySelectorAll("polyline")].map(line => ({
        series: line.dataset.series, points: line.points.numberOfItems, stroke: line.getAttribute("stroke")})),
    };
  }
  return {plots, state: document.getElementById("state").textContent, evals: rows("evals"), syncs: rows("syncs"),
          replicas: rows("replicas"), queues: rows("queues"), syncText: document.getElementById("syncs").textContent,
          reloaded: window.testMarker !== "set before the run started"};
})()"""


@pytest.fixture(scope="module")
def browser_present() -> None:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: the run page's browser test needs Debian's chromium (`make tools`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def stack(browser_present: None,
          start_stack: Callable[..., AbstractContextManager[LocalStack]]) -> Iterator[LocalStack]:
    with start_stack("runpage", generators=1, verifiers=1, extra_env={"SEMIRL_API_TOKEN": TOKEN}) as local:
        yield local


@contextlib.contextmanager
def paused(service: ServiceProcess) -> Iterator[None]:
    service.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        service.signal(signal.SIGCONT)


def first_step(client: ControllerClient, run_id: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while client.run(run_id)["step"] < 1:
        assert time.monotonic() < deadline, "no step reported"
        time.sleep(0.05)


def mid_run(page: Page, client: ControllerClient, stack: LocalStack, run_id: str) -> tuple[int, Any]:
    """With the trainer paused after its first step: the step it stopped at and what the page shows of it."""
    first_step(client, run_id)
    with paused(stack.services["trainer"]):
        time.sleep(1)  # a report sent just before the pause is stored
        step = client.run(run_id)["step"]
        shown = page.wait_for(f"document.body.dataset.steps === '{step}' && [document.body.dataset.state, "
                              "document.querySelector('#plot-loss polyline').points.numberOfItems]", timeout=20)
    return step, shown


def watch_until_ended(page: Page, timeout: float = 300) -> list[tuple[str, int]]:
    """The (state, steps shown) the page went through, without reloading it, until it shows the run ended."""
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1][0] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"the page stopped following the run: {seen}"
        state, steps = page.evaluate("[document.body.dataset.state || '', Number(document.body.dataset.steps || 0)]")
        if not seen or seen[-1] != (state, steps):
            seen.append((state, steps))
        time.sleep(0.3)
    return seen


def check_plots(summary: dict[str, Any], png: bytes, evals: int) -> None:
    plots = summary["plots"]
    expected = {**{name: (series, STEPS) for name, series in STEP_PLOTS.items()}, "heldout": ({"eval:eval"}, evals)}
    assert set(plots) == set(expected)
    for name, (series, points) in expected.items():
        plot = plots[name]
        drawn = {line["series"] for line in plot["lines"]}
        assert not plot["empty"] and series <= drawn <= series | MAYBE.get(name, set()), (name, plot)
        assert {line["points"] for line in plot["lines"]} == {points}, (name, plot["lines"])
        # The screenshot check: the line drawn last (on top: lines with equal values hide the ones before them)
        # is there, in its colour, inside the plot's area.
        top = plot["lines"][-1]
        pixels = colour_pixels(png, top["stroke"], plot["rect"])
        assert pixels >= 40, f"{name}: {pixels} pixels of {top['series']}'s colour {top['stroke']}"


def test_the_run_page_follows_a_real_run_and_plots_it(stack: LocalStack, write_spec: Callable[..., Path],
                                                      tmp_path: Path) -> None:
    spec = write_spec("page", interval=2, steps=STEPS, eval={"every": 4})
    assert httpx.post(f"{stack.url}/v1/runs", content=spec.read_bytes()).status_code == 401  # the token is on
    client = ControllerClient(stack.url, token=TOKEN)
    run_id = client.submit(spec)["id"]
    with chromium(tmp_path / "chromium") as browser:
        page = browser.open(f"{stack.url}/runs/{run_id}")
        page.evaluate("window.testMarker = 'set before the run started'")
        step, shown = mid_run(page, client, stack, run_id)
        assert 0 < step < STEPS and shown == ["running", step]  # the loss plot has one vertex per step so far
        seen = watch_until_ended(page)
        print(f"paused at step {step}; then the page showed (state, steps): {seen}")
        record = client.wait(run_id, timeout=60)
        assert record["state"] == "succeeded", record.get("error")
        assert seen[-1] == ("succeeded", STEPS), seen

        summary = page.evaluate(PAGE_SUMMARY)
        assert not summary["reloaded"] and summary["state"] == "succeeded"
        assert (summary["evals"], len(record["evals"])) == (3, 3)  # steps 0, 4 and 6
        assert summary["syncs"] == record["syncs"] == 2
        assert "v0 → v2" in summary["syncText"] and "v2 → v4" in summary["syncText"]
        assert summary["replicas"] == len(record["replicas"]) and summary["queues"] == len(record["queues"]) == 5
        png = page.screenshot()
        shot = tmp_path / "run-page.png"
        shot.write_bytes(png)
        print(f"run page screenshot: {shot}")
        check_plots(summary, png, evals=3)

        runs = browser.open(f"{stack.url}/")
        link = runs.wait_for(f"[...document.querySelectorAll('#runs a')].map(a => a.href)"
                             f".find(href => href.endsWith('/runs/{run_id}'))", timeout=30)
        assert link == f"{stack.url}/runs/{run_id}"
        assert runs.evaluate("document.querySelector('#runs .state').textContent") == "succeeded"
