"""The controller's Prometheus metrics, read from Redis and the Controller at scrape time (nothing is cached).

Wired in `python -m semirl.controller` with
`telemetry.serve_metrics(port, extra_collectors=[ControllerCollector(controller)])`.

Families (every one a gauge unless it ends in _total):
- semirl_redis_up                                  1 when this scrape could read Redis, else 0
- semirl_queue_lag{stream}                         entries not yet delivered to the stream's consumer group
- semirl_queue_pending{stream}                     delivered but not yet acked
- semirl_queue_length{stream}                      entries in the stream
- semirl_runs{state}                               runs per state (queued, running, succeeded, failed, cancelled)
- semirl_run_active                                1 while a run is active, else 0
- semirl_run_step{run}                             last trainer step reported for the active run
- semirl_run_total_steps{run}                      the active run's train.steps
- semirl_run_policy_version{run}                   last committed policy version (0 = seed)
- semirl_run_generation_version{run}               version the released prompts require
- semirl_run_windows_released{run}                 sync windows released so far
- semirl_run_syncs_total{run}                      generator reload fan-outs (weight syncs) of the active run
- semirl_run_eval_accuracy{run}                    pass@1 of the newest evaluation of the active run
- semirl_reload_last_generators{outcome}           generators that answered the last Reload fan-out (ok|failed)

A scrape never fails because Redis does: families that need Redis are left out (and semirl_redis_up is 0).
Run-level families carry the run id as `run`; only the active run has them, so there is one series at a time.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from semirl.core import keys
from semirl.core.runstate import RunRecord, active_run_id, load_run

if TYPE_CHECKING:
    from .controller import Controller

log = logging.getLogger(__name__)

RUN_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
_MGET_CHUNK = 500


class ControllerCollector(Collector):
    """A prometheus_client custom collector over a `Controller` (register it once per registry)."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def describe(self) -> list[Metric]:
        # Names depend on what Redis holds at scrape time; an empty description also keeps registration from
        # calling collect() (and Redis) on registries that auto-describe.
        return []

    def collect(self) -> Iterator[Metric]:
        families: list[Metric] = []
        up = 1.0
        for part in (self._queues, self._runs, self._active_run):
            try:
                families.extend(part())
            except (redis.RedisError, OSError) as err:
                up = 0.0
                log.debug("metrics: %s skipped, Redis unavailable: %s", part.__name__, err)
            except Exception:  # noqa: BLE001 - a malformed record must not fail the whole scrape
                log.exception("metrics: %s failed", part.__name__)
        redis_up = GaugeMetricFamily("semirl_redis_up", "1 when this scrape could read Redis, else 0")
        redis_up.add_metric([], up)
        yield redis_up
        yield from families
        yield from self._reload()

    # --- the parts (each all-or-nothing) ----------------------------------------------------------------

    def _queues(self) -> list[Metric]:
        depths = self.controller.run_store.queue_depths()
        families = {
            name: GaugeMetricFamily(f"semirl_queue_{name}", help_text, labels=["stream"])
            for name, help_text in (
                ("lag", "Entries not yet delivered to the stream's consumer group"),
                ("pending", "Entries delivered to the stream's consumer group but not yet acked"),
                ("length", "Entries in the stream"),
            )
        }
        for stream, depth in sorted(depths.items()):
            for name, family in families.items():
                family.add_metric([stream], float(depth.get(name, 0)))
        return list(families.values())

    def _runs(self) -> list[Metric]:
        client = self.controller.client
        run_ids = self.controller.run_store.run_ids()
        states: Counter[str] = Counter({state: 0 for state in RUN_STATES})
        for start in range(0, len(run_ids), _MGET_CHUNK):
            chunk = run_ids[start:start + _MGET_CHUNK]
            for raw in client.mget([keys.run_key(run_id) for run_id in chunk]):
                state = _state_of(raw)
                if state is not None:
                    states[state] += 1
        family = GaugeMetricFamily("semirl_runs", "Runs per state", labels=["state"])
        for state, count in sorted(states.items()):
            family.add_metric([state], float(count))
        return [family]

    def _active_run(self) -> list[Metric]:
        client = self.controller.client
        run_id = active_run_id(client)
        record = load_run(client, run_id) if run_id else None
        active = GaugeMetricFamily("semirl_run_active", "1 while a run is active, else 0")
        active.add_metric([], 1.0 if record is not None else 0.0)
        if record is None:
            return [active]
        return [active, *_run_families(record)]

    def _reload(self) -> list[Metric]:
        outcomes = list(self.controller.last_reload)  # replaced whole by the scheduler, never mutated in place
        family = GaugeMetricFamily("semirl_reload_last_generators",
                                   "Generators that answered the last Reload fan-out, by outcome", labels=["outcome"])
        family.add_metric(["ok"], float(sum(o.ok for o in outcomes)))
        family.add_metric(["failed"], float(sum(not o.ok for o in outcomes)))
        return [family]


def _run_families(record: RunRecord) -> list[Metric]:
    labels = ["run"]
    values = [record.id]
    gauges = (
        ("semirl_run_step", "Last trainer step reported for the active run", record.step),
        ("semirl_run_total_steps", "Trainer steps of the active run (train.steps)", record.spec.train.steps),
        ("semirl_run_policy_version", "Last committed policy version of the active run (0 = seed)",
         record.policy_version),
        ("semirl_run_generation_version", "Policy version the active run's released prompts require",
         record.generation_version),
        ("semirl_run_windows_released", "Sync windows released for the active run", record.windows_released),
    )
    families: list[Metric] = []
    for name, help_text, value in gauges:
        family = GaugeMetricFamily(name, help_text, labels=labels)
        family.add_metric(values, float(value))
        families.append(family)
    syncs = CounterMetricFamily("semirl_run_syncs", "Generator reload fan-outs (weight syncs) of the active run",
                                labels=labels)
    syncs.add_metric(values, float(record.syncs))
    families.append(syncs)
    if record.evals:
        newest = max(record.evals, key=lambda e: e.step)
        accuracy = GaugeMetricFamily("semirl_run_eval_accuracy",
                                     "pass@1 of the newest evaluation of the active run", labels=labels)
        accuracy.add_metric(values, newest.accuracy)
        families.append(accuracy)
    return families


def _state_of(raw: bytes | str | None) -> str | None:
    """A run record's state without validating the whole record (a scrape reads every run)."""
    if raw is None:
        return None
    try:
        state = json.loads(raw).get("state")
    except (ValueError, AttributeError):
        return None
    return state if state in RUN_STATES else None
