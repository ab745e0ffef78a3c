"""ReportStep: the trainer's report of each step, stored with the run's metrics, and the run's group counters.

The counters (groups trained, skipped, dropped) are kept incrementally, so a report costs O(1) in the run's length;
a resumed trainer replays the steps after its checkpoint, and the replaced reports' groups are subtracted first.
The first step trained on a newly synced version gets `reload_s`, the slowest generator's load of it: the trainer
cannot see reloads, and with its own timings this completes the step's breakdown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from semirl.proto import controller_pb2
from semirl.spec import RunSpec

from .fanout import ReloadOutcome
from .run_lifecycle import RunLifecycle
from .run_store import RunStore


def group_outcome(group: controller_pb2.GroupUse) -> str:
    if group.trained:
        return "groups_trained"
    return "groups_dropped" if group.skip_reason.startswith("dropped") else "groups_skipped"


class StepReports:
    def __init__(self, run_store: RunStore, lifecycle: RunLifecycle,
                 last_reload: Callable[[], list[ReloadOutcome]]) -> None:
        self.run_store = run_store
        self.lifecycle = lifecycle
        self.last_reload = last_reload

    def report(self, report: controller_pb2.StepReport) -> bool:
        """Store the report and metrics; True when the trainer should stop (run cancelled). Under the lock."""
        record = self.lifecycle.readable(report.run_id)
        if record is None:
            return True
        if record.state in ("cancelled", "failed"):
            return True
        counters = Counter(record.counters)
        if report.step <= record.step:  # a resumed trainer replays the steps after its checkpoint
            for replaced in self.run_store.reports_from(report.run_id, int(report.step)):
                counters.subtract(group_outcome(group) for group in replaced.groups)
        self._add_reload_time(record.spec, report)
        counters.update(group_outcome(group) for group in report.groups)
        record.step = int(report.step)
        record.resumed_from_step = max(record.resumed_from_step, int(report.resumed_from_step))
        record.counters = {name: count for name, count in counters.items() if count}
        self.run_store.append_step(report, record)
        return False

    def _add_reload_time(self, spec: RunSpec, report: controller_pb2.StepReport) -> None:
        step = int(report.step)
        version = spec.policy_version_for_step(step)
        if version == 0 or version != step - 1:
            return
        loads = [o.seconds for o in self.last_reload()
                 if o.ok and o.run_id == report.run_id and o.version == version]
        if loads:
            report.metrics["reload_s"] = max(loads)
