"""The generator worker: prompt tasks from Redis in, sample groups out, policy versions kept in step.

docs/architecture.md, data flow and the sync rule.

- Reads `PromptTask`s from the `prompts` stream (consumer group `generators`, consumer = generator id) in
  batches, groups them by the policy they require (generator/policies.py), loads that policy before serving them
  (a generator that missed a Reload sees the task's version and reloads first), generates with vLLM (each prompt
  in its task's `prompt_format`, chat and raw mixed in one batch) and forwards one `SampleGroup` per task to
  `to_verify` or `to_reward` (core/rewards.py), at most once per (run, prompt_id).
- At start-up it loads the active run's current generation policy before taking tasks, and listens for reload
  notices (generator/reload_notices.py). The loop, gRPC threads and the listener share the engine through one
  lock (generator/shared_engine.py).
- A bad task never crashes the loop. The kit's `accept()` (core/worker.py) acks, with nothing forwarded, a task
  missing its ids or prompt, one of a run that has ended and one already generated. One that can never succeed (a
  prompt vLLM rejects or the chat template cannot render, a policy that fails to load or generation that fails
  `MAX_ATTEMPTS` times) is forwarded as a `SampleGroup` with no samples, so the trainer's step and the
  controller's eval round still get one group per prompt. Anything else is left pending and comes back after the
  visibility timeout.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path

import redis

from semirl.core import keys
from semirl.core.checkpoint_store import MANIFEST
from semirl.core.rewards import scorer_stream
from semirl.core.runstate import active_run
from semirl.core.streams import Delivery, StreamQueue
from semirl.core.worker import Worker
from semirl.generator.engine import Generated, Policy, is_prompt_rejection
from semirl.generator.messages import prompt_of, sample_group, sampling_from_proto
from semirl.generator.metrics import GeneratorMetrics
from semirl.generator.policies import current_generation_policy
from semirl.generator.reload_notices import ReloadListener
from semirl.generator.shared_engine import SharedEngine
from semirl.proto import types_pb2

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
EXPORT_WAIT_S = 900.0   # an export the trainer writes after an in-memory commit: 16 GB at 8B is seconds to a minute
EXPORT_POLL_S = 0.5
ADOPT_CHECK_S = 2.0
Result = tuple[list[int], list[Generated]]


class GeneratorWorker(Worker[types_pb2.PromptTask]):
    service = "generator"
    grpc_service = "semirl.v1.GeneratorService"
    done_stage = "generate"
    metrics: GeneratorMetrics

    def __init__(self, client: redis.Redis, generator_id: str, engine: SharedEngine, *, grpc_port: int,
                 advertise_host: str = "127.0.0.1", model: str | None = None,
                 batch_size: int = 64,  # tasks per engine call: a step of the paper (64 prompts) in one batch
                 block_ms: int = 1000) -> None:
        super().__init__(client, generator_id, engine.metrics, grpc_port=grpc_port, advertise_host=advertise_host)
        self.generator_id = generator_id
        self.engine = engine
        self.model = model
        self.batch_size = batch_size
        self.block_ms = block_ms
        self._failures: dict[str, int] = {}
        self._next_adopt_check = 0.0
        self.queue: StreamQueue[types_pb2.PromptTask] = StreamQueue(
            client, keys.PROMPTS, keys.GENERATORS_GROUP, generator_id, types_pb2.PromptTask,
            owner_service="generator",
        )
        self.reload_listener = ReloadListener(client, engine, self.stop)

    # --- lifecycle ---------------------------------------------------------------------------------------

    def on_start(self) -> None:
        self.reload_listener.start()
        self._load_at_startup()

    def _load_at_startup(self) -> None:
        """A generator started mid-run loads the current committed version first; one with a model to preload loads
        it; any other imports vLLM, so that its first run waits only for the engine build."""
        try:
            record = active_run(self.client)
            if record is not None and not record.finished:
                self.engine.load(current_generation_policy(record), record.id)
            elif self.model:
                self.engine.load(Policy(0, self.model))
            else:
                seconds = self.engine.engine.import_vllm()
                log.info("vLLM imported in %.1f s; the engine is built for the first run", seconds)
        except Exception:  # noqa: BLE001 - the first task (or a Reload) will load it instead
            log.exception("start-up load failed; will load on the first task")

    def close(self) -> None:
        self.reload_listener.join()
        self.engine.close()

    # --- the work ----------------------------------------------------------------------------------------

    def task_of(self, message: types_pb2.PromptTask) -> types_pb2.PromptTask:
        return message

    def well_formed(self, task: types_pb2.PromptTask) -> bool:
        return bool(task.run_id and task.prompt_id and task.prompt)

    def step(self) -> int:
        """Read and serve one batch of tasks; returns the number of tasks read."""
        deliveries = self.queue.read(count=self.batch_size, block_ms=self.block_ms)
        if deliveries:
            self.serve(deliveries)
        else:
            self._adopt_active_run()
        return len(deliveries)

    def _adopt_active_run(self) -> None:
        """An idle generator whose engine is not the active run's loads the run's current policy now, not at its
        first task: so it is a member of the run's next in-memory sync (docs/architecture.md, weight transfer)."""
        now = time.monotonic()
        if now < self._next_adopt_check:
            return
        self._next_adopt_check = now + ADOPT_CHECK_S
        record = active_run(self.client)
        if record is None or record.finished or record.state != "running" or record.id == self.engine.run_id:
            return
        try:
            self.engine.load(current_generation_policy(record), record.id)
        except Exception:  # noqa: BLE001 - its first task (or a Reload) loads it instead
            log.exception("cannot load the policy of run %s", record.id)

    def serve(self, deliveries: list[Delivery[types_pb2.PromptTask]]) -> None:
        by_policy: OrderedDict[Policy | None, list[Delivery]] = OrderedDict()
        loaded = self.engine.policy
        for delivery in self.accept(deliveries, self.queue.ack):
            policy = self.engine.policies.required(delivery.message, loaded, self.engine.run_id)
            by_policy.setdefault(policy, []).append(delivery)
        # Serve what the loaded policy can serve first, then the rest in version order: fewest reloads.
        order = sorted(by_policy, key=lambda p: (p != loaded, p.version if p else -1))
        for policy in order:
            self._serve_group(policy, by_policy[policy])

    def _serve_group(self, policy: Policy | None, deliveries: list[Delivery]) -> None:
        if policy is None:
            for delivery in deliveries:
                self._failed(delivery, f"policy v{delivery.message.policy.version} has no known path")
            return
        run_id = deliveries[0].message.run_id
        if not self._export_written(policy, run_id):
            for delivery in deliveries:
                self._failed(delivery, f"the export of v{policy.version} was not written in {EXPORT_WAIT_S:.0f} s")
            return
        with self.engine.lock:
            try:
                self.engine.load(policy, run_id)
            except Exception as err:  # noqa: BLE001
                log.exception("cannot load policy v%d from %s", policy.version, policy.path)
                for delivery in deliveries:
                    self._failed(delivery, f"load failed: {err}")
                return
            outputs = self._generate_isolating(deliveries)
        for delivery, (result, seconds) in outputs:
            self._forward(delivery, result, policy.version, seconds)

    def _export_written(self, policy: Policy, run_id: str) -> bool:
        """A version committed in memory that this generator does not hold is served from its export, which the
        trainer writes after the commit: wait for it (bounded) rather than fail its tasks."""
        held = self.engine.policy
        if held is not None and held.in_memory and held.version == policy.version and self.engine.run_id == run_id:
            return True
        directory = Path(policy.path)
        if directory.parent.name != "policy" or (directory / MANIFEST).is_file():
            return True  # not an export of a run (the seed), or written
        log.info("waiting for the export of v%d of %s (%s)", policy.version, run_id, directory)
        deadline = time.monotonic() + EXPORT_WAIT_S
        while not (directory / MANIFEST).is_file():
            if self.stop.wait(EXPORT_POLL_S) or time.monotonic() > deadline:
                return False
        return True

    def _generate_isolating(self, deliveries: list[Delivery]) -> list[tuple[Delivery, tuple[Result, float]]]:
        """Generate for all; if a prompt is rejected (by vLLM, or the chat template cannot render it), retry one
        by one so that one bad prompt drops alone."""
        tasks = [d.message for d in deliveries]
        started = time.perf_counter()
        try:
            results = self.engine.generate_loaded([prompt_of(t) for t in tasks],
                                                  [sampling_from_proto(t.sampling) for t in tasks])
            seconds = time.perf_counter() - started
            return [(d, (r, seconds)) for d, r in zip(deliveries, results, strict=True)]
        except Exception as err:  # noqa: BLE001
            if not is_prompt_rejection(err):
                log.exception("generation failed for %d tasks", len(deliveries))
                for delivery in deliveries:
                    self._failed(delivery, f"generation failed: {err}")
                return []
            if len(deliveries) == 1:
                self._failed(deliveries[0], f"prompt rejected: {err}", permanent=True)
                return []
        served = []
        for delivery in deliveries:
            served.extend(self._generate_isolating([delivery]))
        return served

    def _forward(self, delivery: Delivery, result: Result | None, version: int, seconds: float) -> None:
        task: types_pb2.PromptTask = delivery.message
        prompt_token_ids, samples = result if result is not None else ([], [])
        group = sample_group(task, prompt_token_ids, samples, version, self.generator_id, seconds)
        written = self.queue.forward(
            delivery, scorer_stream(task), group, done_set=keys.done_key(task.run_id, "generate"),
            member=task.prompt_id,
        )
        self._failures.pop(delivery.entry_id, None)
        if written and result is not None:
            self.engine.tasks_done += 1
            self.metrics.tasks_served.inc()
        elif written:
            self.metrics.empty_groups.inc()

    def _failed(self, delivery: Delivery, reason: str, *, permanent: bool = False) -> None:
        if len(self._failures) > 10_000:  # entries another generator took over never come back here
            self._failures.clear()
        attempts = self._failures.get(delivery.entry_id, 0) + 1
        self.metrics.task_failures.inc()
        self._failures[delivery.entry_id] = attempts
        task = delivery.message
        if permanent or attempts >= MAX_ATTEMPTS:
            log.error("giving up on task %s/%s after %d attempt(s), forwarding it with no samples: %s",
                      task.run_id, task.prompt_id, attempts, reason)
            self._failures.pop(delivery.entry_id, None)
            if task.run_id and task.prompt_id:
                # The trainer needs one group per prompt and the eval round every prompt: an empty group
                # (skipped downstream as too few samples) keeps them from waiting forever.
                self._forward(delivery, None, int(task.policy.version), 0.0)
            else:
                self.queue.ack([delivery.entry_id])
        else:
            log.warning("task %s/%s failed (attempt %d, will be redelivered): %s", task.run_id, task.prompt_id,
                        attempts, reason)
