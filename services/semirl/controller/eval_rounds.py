"""Evaluation rounds of a running run: released when their policy is committed, collected when every prompt of a set
is scored, and the best checkpoint kept (docs/architecture.md, evaluation).

A round for eval step e evaluates the seed (e = 0), the final policy (e = the last step, once `final/` is
committed) or the newest committed version once e ≤ it; its tasks go on the `prompts` stream with the round
record in one MULTI/EXEC. Scored groups come back on `eval_scored`, are stored per prompt (idempotent on
redelivery), and a set's `EvalResult` is appended when all its prompts are in (controller/evaluation.py scores it).
A version whose evaluation is in flight is protected from retention and holds back a sync's fan-out (syncs.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import redis

from semirl.core import keys
from semirl.core.checkpoint_store import CheckpointError, staged_copy
from semirl.core.runstate import BestCheckpoint, EvalResult, RunRecord
from semirl.core.streams import PAYLOAD_FIELD, StreamQueue
from semirl.proto import types_pb2

from .evaluation import EvalRound, SetRound, outcome_of, summarize
from .prompt_tasks import build_eval_tasks
from .run_lifecycle import RunLifecycle
from .run_store import RunStore

log = logging.getLogger(__name__)


class EvalRounds:
    def __init__(self, client: redis.Redis, run_store: RunStore, lifecycle: RunLifecycle, *, consumer: str) -> None:
        self.client = client
        self.run_store = run_store
        self.lifecycle = lifecycle
        self.queue = StreamQueue(client, keys.EVAL_SCORED, keys.CONTROLLER_GROUP, consumer, types_pb2.ScoredGroup)

    def release(self, record: RunRecord) -> None:
        """Release every eval round of a running run that is due and not released yet."""
        spec = record.spec
        if not spec.data.eval:
            return
        released = self.run_store.eval_rounds(record.id)
        for index, step in enumerate(spec.eval_steps()):
            if step in released:
                continue
            if step == 0:
                version, path = 0, spec.model.path
            elif step == spec.train.steps:
                if record.final_path is None:
                    continue
                version, path = record.policy_version, record.policy_path
            elif 0 < step <= record.policy_version:
                version, path = record.policy_version, record.policy_path
            else:
                continue
            policy = types_pb2.PolicyRef(version=version, path=path)
            tasks = build_eval_tasks(record.id, spec, step, index, self.lifecycle.eval_problems(record), policy)
            released_round = EvalRound(policy_version=version, policy_path=path)
            for task in tasks:
                counted = released_round.sets.setdefault(
                    task.eval_set, SetRound(prompts=0, samples_per_prompt=task.sampling.n))
                counted.prompts += 1
            with self.client.pipeline(transaction=True) as pipe:
                for task in tasks:
                    pipe.xadd(keys.PROMPTS, {PAYLOAD_FIELD: task.SerializeToString()})
                pipe.hset(keys.run_eval_key(record.id), f"round:{step}", released_round.model_dump_json())
                pipe.execute()
            log.info("run %s: eval round for step %d released (%d prompts in %d sets, policy v%d)",
                     record.id, step, len(tasks), len(released_round.sets), version)

    def versions_in_flight(self, record: RunRecord) -> set[int]:
        """Policy versions of released rounds with a set not yet collected."""
        done = {(e.step, e.eval_set) for e in record.evals}
        return {released.policy_version for step, released in self.run_store.eval_rounds(record.id).items()
                if any((step, name) not in done for name in released.sets)}

    def take_in(self, block_ms: int = 0) -> tuple[int, set[str]]:
        """Store the scored eval groups that have arrived; returns how many were read and the runs they touched."""
        # XREADGROUP's BLOCK 0 means "forever": no block argument at all is the non-blocking read.
        deliveries = self.queue.read(count=256, block_ms=block_ms if block_ms > 0 else None)  # type: ignore[arg-type]
        touched: set[str] = set()
        for delivery in deliveries:
            task = delivery.message.group.task
            if task.purpose == types_pb2.TASK_PURPOSE_EVAL and self.client.exists(keys.run_key(task.run_id)):
                self.run_store.record_eval_result(task.run_id, task.prompt_id, outcome_of(delivery.message))
                touched.add(task.run_id)
        self.queue.ack(d.entry_id for d in deliveries)
        return len(deliveries), touched

    def collect(self, run_id: str) -> None:
        """Append an EvalResult for every (round, set) of the run whose prompts are all in (under the lock)."""
        record = self.lifecycle.readable(run_id)
        if record is None or record.finished:
            return
        done = {(e.step, e.eval_set) for e in record.evals}
        results = list(self.run_store.eval_results(run_id).values())
        changed = False
        for step, released in sorted(self.run_store.eval_rounds(run_id).items()):
            for name, expected in released.sets.items():
                if (step, name) in done:
                    continue
                got = [r for r in results if r.eval_step == step and r.eval_set == name]
                if len(got) < expected.prompts:
                    continue
                result = summarize(step, name, released.policy_version, expected, got)
                record.evals.append(result)
                self._keep_if_best(record, result, released.policy_path)
                changed = True
                log.info("run %s: eval of step %d on %s: accuracy %.3f ± %s (%d of %d prompts failed)", run_id,
                         step, name, result.accuracy, "n/a" if result.stderr is None else f"{result.stderr:.3f}",
                         result.failed_prompts, result.prompts)
        if changed:
            order = {dataset.name: index for index, dataset in enumerate(record.spec.data.eval)}
            record.evals.sort(key=lambda e: (e.step, order.get(e.eval_set, len(order))))
            self.run_store.save(record)

    def _keep_if_best(self, record: RunRecord, result: EvalResult, policy_path: str) -> None:
        """eval.best_by: a better result exports its policy to best/ (while its version is still protected from
        retention: its evaluation was in flight until now)."""
        spec = record.spec
        if spec.eval.best_by is None or result.eval_set != spec.best_by_set:
            return
        metric = spec.eval.best_by.metric
        value = getattr(result, metric)
        if value is None or (record.best is not None and value <= record.best.value):
            return
        checkpoints = self.run_store.checkpoints(record)
        target = checkpoints.best_dir
        source = Path(policy_path) if policy_path else checkpoints.policy_dir(result.policy_version)  # in memory then
        try:
            staged_copy(source, target, {"run_id": record.id, "step": result.step, metric: value},
                        link=True)
        except (OSError, CheckpointError) as err:
            log.warning("run %s: cannot export the best checkpoint (step %d): %s", record.id, result.step, err)
            return
        record.best = BestCheckpoint(step=result.step, eval_set=result.eval_set, metric=metric, value=float(value),
                                     path=str(target))
        log.info("run %s: best checkpoint is now step %d (%s %.4f on %s)", record.id, result.step, metric, value,
                 result.eval_set)
