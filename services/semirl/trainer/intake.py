"""Intake: which scored groups a trainer step gets, and which are dropped (no DeepSpeed here; unit-testable).

Train step t (1-based) takes exactly `train.batch_prompts` groups of the run whose task says `train_step = t` and
whose policy version the acceptance rule lets t train on (`RunSpec.accepts_version`, beside v(t) in spec.py).
Everything else is acked at once and counted as dropped — never trained: groups of another run or of an
evaluation (not reported), a prompt already consumed by a trained step ("duplicate"), a step already trained or
a version older than the rule accepts ("stale"), a step past the run's end ("out_of_range"), any other version
the rule refuses ("wrong_version"), a second group for the same prompt ("duplicate") or more groups than the step
takes ("surplus").

The entries of the groups a step used stay pending until the checkpoint covering that step is committed (the
caller acks them). Entries Redis hands back to this same consumer after the visibility timeout are recognized
(`held`) and ignored.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from semirl.core.streams import Delivery, StreamQueue
from semirl.proto import controller_pb2, types_pb2
from semirl.spec import RunSpec

log = logging.getLogger(__name__)

DropHook = Callable[[str], None]


class StepIntake:
    def __init__(
        self, queue: StreamQueue[types_pb2.ScoredGroup], run_id: str, spec: RunSpec,
        on_drop: DropHook | None = None,
    ) -> None:
        self.queue = queue
        self.run_id = run_id
        self.spec = spec
        self.on_drop = on_drop
        self.held: set[str] = set()                 # entry ids buffered or trained-but-unacked by this trainer
        self.consumed: set[str] = set()             # prompt ids used by a trained step (trained or skipped)
        self.counters: Counter[str] = Counter()
        self.buffers: dict[int, dict[str, Delivery[types_pb2.ScoredGroup]]] = {}
        self.dropped: list[controller_pb2.GroupUse] = []  # dropped since the last report

    def complete(self, step: int) -> bool:
        return len(self.buffers.get(step, {})) >= self.spec.train.batch_prompts

    def poll(self, step: int, block_ms: int = 1000) -> None:
        """Read what the stream has (blocking up to `block_ms`) and route it, `step` being the step to fill."""
        for delivery in self.queue.read(count=self.spec.train.batch_prompts, block_ms=block_ms):
            self.route(delivery, step)

    def take(self, step: int) -> list[Delivery[types_pb2.ScoredGroup]]:
        """The complete step's groups, in slot order (by prompt id within the step)."""
        collected = self.buffers.pop(step)
        return sorted(collected.values(), key=lambda d: d.message.group.task.prompt_id)

    def mark_trained(self, deliveries: list[Delivery[types_pb2.ScoredGroup]]) -> list[str]:
        for delivery in deliveries:
            self.consumed.add(delivery.message.group.task.prompt_id)
        return [delivery.entry_id for delivery in deliveries if delivery.entry_id]  # "": not from the stream

    def released(self, entry_ids: list[str]) -> None:
        """These entries were acked by the caller (their checkpoint is committed)."""
        self.held.difference_update(entry_ids)

    def take_dropped(self) -> list[controller_pb2.GroupUse]:
        dropped, self.dropped = self.dropped, []
        return dropped

    def drop(self, delivery: Delivery[types_pb2.ScoredGroup], reason: str, *, report: bool = True) -> None:
        self.queue.ack([delivery.entry_id])
        self.counters[f"dropped_{reason}"] += 1
        if self.on_drop is not None:
            self.on_drop(reason)
        group = delivery.message.group
        if report:
            self.dropped.append(controller_pb2.GroupUse(
                prompt_id=group.task.prompt_id, policy_version=group.policy_version, trained=False,
                skip_reason=f"dropped_{reason}",
            ))
        log.debug("dropped %s (%s)", group.task.prompt_id, reason)

    def route(self, delivery: Delivery[types_pb2.ScoredGroup], current: int) -> None:
        """Buffer `delivery` for its step, or drop it; `current` is the step being filled now."""
        if delivery.entry_id in self.held:
            return
        group = delivery.message.group
        task = group.task
        if task.run_id != self.run_id:
            self.drop(delivery, "other_run", report=False)
            return
        if task.purpose == types_pb2.TASK_PURPOSE_EVAL:
            self.drop(delivery, "eval", report=False)
            return
        reason = self._refusal(task, int(group.policy_version), current)
        if reason:
            self.drop(delivery, reason)
            return
        self.buffers.setdefault(int(task.train_step), {})[task.prompt_id] = delivery
        self.held.add(delivery.entry_id)

    def _refusal(self, task: types_pb2.PromptTask, version: int, current: int) -> str:
        step = int(task.train_step)
        if task.prompt_id in self.consumed:
            return "duplicate"
        if step < current or step == 0:
            return "stale"
        if step > self.spec.train.steps:
            return "out_of_range"
        if not self.spec.accepts_version(step, version):
            return "stale" if version < self.spec.oldest_accepted_version(step) else "wrong_version"
        bucket = self.buffers.get(step, {})
        if task.prompt_id in bucket:
            return "duplicate"
        if len(bucket) >= self.spec.train.batch_prompts:
            return "surplus"
        return ""
