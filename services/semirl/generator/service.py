"""The generator worker: prompt tasks from Redis in, sample groups out, policy versions kept in step.

docs/architecture.md, data flow and the sync rule.

- Reads `PromptTask`s from the `prompts` stream (consumer group `generators`, consumer = generator id) in
  batches, groups them by the policy they require, loads that policy before serving them (a generator that
  missed a Reload sees the task's version and reloads first), generates with vLLM (each prompt in its task's
  `prompt_format`, chat and raw mixed in one batch) and forwards one `SampleGroup` per task to `to_verify` or
  `to_reward`, at most once per (run, prompt_id).
- At start-up it loads the active run's current generation policy before taking tasks.
- Registers its gRPC endpoint (core/registration.py) with a TTL refreshed by a heartbeat, and
  listens on the reload pub/sub channel. gRPC threads, the pub/sub thread and the loop share the engine
  through one lock.
- A bad task never crashes the loop. An undecodable task or one missing its ids is acked with nothing
  forwarded. One that can never succeed (a prompt vLLM rejects or the chat template cannot render, a policy
  that fails to load or generation that fails `MAX_ATTEMPTS` times) is forwarded as a `SampleGroup` with no
  samples, so the trainer's step and the controller's eval round still get one group per prompt. Anything
  else is left pending and comes back after the visibility timeout.
- Tasks of runs that have ended (succeeded, failed or cancelled) are acked
  and dropped (docs/architecture.md decision 2).
- Prometheus metrics (`GeneratorMetrics`, served by `python -m semirl.generator --metrics-port`): tasks served,
  samples and tokens generated, empty groups and failed attempts, reloads and their duration, the loaded version.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from semirl.core import keys, telemetry
from semirl.core.group_scoring import scorer_stream
from semirl.core.grpc_server import ServiceServer
from semirl.core.redis_client import connect
from semirl.core.registration import Registration
from semirl.core.runstate import RunRecord, StaleRunFilter, active_run, load_run
from semirl.core.streams import Delivery, StreamQueue
from semirl.generator.engine import (
    EngineConfig,
    Generated,
    GenerationEngine,
    LoadResult,
    Policy,
    Sampling,
)
from semirl.generator.prompts import Prompt, PromptError, PromptFormat
from semirl.proto import generator_pb2, generator_pb2_grpc, types_pb2

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


class GeneratorMetrics:
    """The generator's Prometheus metrics, in their own registry (core/telemetry.py)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else telemetry.new_registry()
        r = self.registry
        self.tasks_served = Counter("semirl_generator_tasks_served", "Tasks forwarded downstream with their samples",
                                    registry=r)
        self.samples = Counter("semirl_generator_samples_generated", "Samples generated (tasks and the Generate RPC)",
                               registry=r)
        self.tokens = Counter("semirl_generator_generated_tokens", "Tokens generated (tasks and the Generate RPC)",
                              registry=r)
        self.prompt_tokens = Counter("semirl_generator_prompt_tokens", "Prompt tokens of generated prompts",
                                     registry=r)
        self.generate_seconds = Histogram("semirl_generator_generate_seconds", "Time of one engine generate call "
                                          "(one batch of prompts)", registry=r, buckets=telemetry.SECONDS_BUCKETS)
        self.empty_groups = Counter("semirl_generator_empty_groups", "Tasks given up on and forwarded with no samples",
                                    registry=r)
        self.task_failures = Counter("semirl_generator_task_failures", "Failed attempts at a task (load or "
                                     "generation failed, prompt rejected)", registry=r)
        self.tasks_dropped = Counter("semirl_generator_tasks_dropped", "Tasks acked without generating (stale: "
                                     "their run has ended; malformed; duplicate: already generated)", ["reason"],
                                     registry=r)
        self.reloads = Counter("semirl_generator_reloads", "Policy loads that changed the engine's weights",
                               registry=r)
        self.reload_failures = Counter("semirl_generator_reload_failures", "Policy loads that failed", registry=r)
        self.reload_seconds = Histogram("semirl_generator_reload_seconds", "Time of a policy load that changed the "
                                        "weights", registry=r, buckets=telemetry.SECONDS_BUCKETS)
        self.policy_version = Gauge("semirl_generator_policy_version", "Policy version loaded (-1: none)",
                                    registry=r)
        self.redis_errors = Counter("semirl_generator_redis_errors", "Redis errors in the work loop", registry=r)
        self.policy_version.set(-1)
        for reason in ("stale", "malformed", "duplicate"):
            self.tasks_dropped.labels(reason)

    def generated(self, results: list[tuple[list[int], list[Generated]]], seconds: float) -> None:
        self.generate_seconds.observe(seconds)
        self.samples.inc(sum(len(samples) for _, samples in results))
        self.tokens.inc(sum(len(s.token_ids) for _, samples in results for s in samples))
        self.prompt_tokens.inc(sum(len(prompt_ids) for prompt_ids, _ in results))


def is_prompt_rejection(err: BaseException) -> bool:
    """Whether vLLM refused the request itself (a prompt too long, bad parameters): retrying cannot help.

    The engine maps ValueError to PromptError, but newer vLLM raises VLLMClientError (not a ValueError).
    """
    if isinstance(err, PromptError):
        return True
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return False
    return isinstance(err, VLLMClientError)


def sampling_from_proto(params: types_pb2.SamplingParams) -> Sampling:
    return Sampling(
        n=params.n or 1,
        temperature=params.temperature,
        top_p=params.top_p or 1.0,
        max_tokens=params.max_tokens or 128,
        seed=params.seed,
        logprobs=params.logprobs,
    )


def prompt_format_from_proto(value: types_pb2.PromptFormat.ValueType) -> PromptFormat:
    """CHAT for PROMPT_FORMAT_CHAT; RAW for RAW and for UNSPECIFIED (a task written before the field existed)."""
    return PromptFormat.CHAT if value == types_pb2.PROMPT_FORMAT_CHAT else PromptFormat.RAW


def prompt_of(task: types_pb2.PromptTask) -> Prompt:
    return Prompt(task.prompt, prompt_format_from_proto(task.prompt_format))


def sample_group(
    task: types_pb2.PromptTask,
    prompt_token_ids: list[int],
    samples: list[Generated],
    version: int,
    generator_id: str,
    seconds: float,
) -> types_pb2.SampleGroup:
    """The wire form of one prompt's samples, tagged with the policy version that produced them."""
    return types_pb2.SampleGroup(
        task=task,
        prompt_token_ids=prompt_token_ids,
        samples=samples_to_proto(samples),
        policy_version=version,
        generator_id=generator_id,
        generation_seconds=seconds,
    )


def samples_to_proto(samples: list[Generated]) -> list[types_pb2.Sample]:
    return [
        types_pb2.Sample(text=s.text, token_ids=s.token_ids, logprobs=s.logprobs, finish_reason=s.finish_reason)
        for s in samples
    ]


def engine_config_for(record: RunRecord | None, base: EngineConfig) -> EngineConfig:
    if record is None:
        return base
    return EngineConfig(
        dtype=record.spec.model.dtype,
        max_model_len=record.spec.model.max_model_len,
        enforce_eager=base.enforce_eager,
        seed=base.seed,
        extra=base.extra,
    )


def current_generation_policy(record: RunRecord) -> Policy:
    """The policy a generator must serve now: the committed version if released, else the seed (v0)."""
    if record.generation_version == record.policy_version and record.policy_path:
        return Policy(record.policy_version, record.policy_path)
    return Policy(0, record.spec.model.path)


class GeneratorService:
    def __init__(
        self,
        redis_url: str,
        grpc_port: int,
        generator_id: str,
        *,
        advertise_host: str = "127.0.0.1",
        model: str | None = None,
        engine_config: EngineConfig | None = None,
        batch_size: int = 64,  # tasks per engine call: a step of the paper (64 prompts) in one batch
        block_ms: int = 1000,
    ) -> None:
        self.generator_id = generator_id
        self.metrics = GeneratorMetrics()
        self.client = connect(redis_url)
        self.base_config = engine_config or EngineConfig()
        self.engine = GenerationEngine(self.base_config)
        self.model = model
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.lock = threading.RLock()
        self.stop = threading.Event()
        self.run_id = ""
        self.tasks_done = 0
        self.reloads = 0
        self._failures: dict[str, int] = {}
        self._records: dict[str, RunRecord | None] = {}
        self.stale_runs = StaleRunFilter(self.client)
        self.tasks_dropped_stale = 0
        self.queue: StreamQueue[types_pb2.PromptTask] = StreamQueue(
            self.client, keys.PROMPTS, keys.GENERATORS_GROUP, generator_id, types_pb2.PromptTask,
            owner_service="generator",
        )
        self.server = ServiceServer(f"0.0.0.0:{grpc_port}", "semirl.v1.GeneratorService")
        from semirl.generator.grpc_api import GeneratorServicer

        self.server.add(generator_pb2_grpc.add_GeneratorServiceServicer_to_server, GeneratorServicer(self))
        self.port = self.server.port
        self.endpoint = f"{advertise_host}:{self.port}"
        self.registration = Registration(self.client, "generator", generator_id, self.endpoint)
        self._threads: list[threading.Thread] = []

    # --- engine access (always under the lock) ---------------------------------------------------------

    def load(self, policy: Policy, run_id: str = "") -> LoadResult:
        with self.lock:
            if run_id:
                self.engine.configure(engine_config_for(self._record(run_id), self.base_config))
                self.run_id = run_id
            try:
                result = self.engine.load(policy)
            except Exception:
                self.metrics.reload_failures.inc()
                raise
            if result.reloaded:
                self.reloads += 1
                self.metrics.reloads.inc()
                self.metrics.reload_seconds.observe(result.seconds)
            self.metrics.policy_version.set(result.version)
            return result

    def generate(self, prompts: list[Prompt], sampling: list[Sampling]) -> tuple[int, list]:
        """Generate with whatever is loaded; returns (policy_version, results)."""
        with self.lock:
            if self.engine.policy is None:
                raise RuntimeError("no policy loaded")
            return self.engine.policy.version, self._engine_generate(prompts, sampling)

    def _engine_generate(self, prompts: list[Prompt], sampling: list[Sampling]) -> list:
        started = time.perf_counter()
        results = self.engine.generate(prompts, sampling)
        self.metrics.generated(results, time.perf_counter() - started)
        return results

    def status(self) -> generator_pb2.GeneratorStatus:
        policy = self.engine.policy
        return generator_pb2.GeneratorStatus(
            generator_id=self.generator_id,
            run_id=self.run_id,
            policy_version=policy.version if policy else 0,
            policy_path=policy.path if policy else "",
            engine_ready=self.engine.ready,
            tasks_done=self.tasks_done,
            reloads=self.reloads,
        )

    def _record(self, run_id: str, *, fresh: bool = False) -> RunRecord | None:
        if fresh or run_id not in self._records:
            try:
                self._records[run_id] = load_run(self.client, run_id)
            except Exception:  # noqa: BLE001 - a malformed record must not stop generation
                log.exception("cannot read run record %s", run_id)
                return None
        return self._records[run_id]

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self.server.start()
        self.registration.start()
        thread = threading.Thread(target=self._listen_reloads, name="reload-listener", daemon=True)
        thread.start()
        self._threads.append(thread)
        self._load_at_startup()
        self.server.set_serving(True)

    def _load_at_startup(self) -> None:
        """A generator started mid-run loads the current committed version first; one with a model to preload loads
        it; any other imports vLLM, so that its first run waits only for the engine build."""
        try:
            record = active_run(self.client)
            if record is not None and not record.finished:
                self.load(current_generation_policy(record), record.id)
            elif self.model:
                self.load(Policy(0, self.model))
            else:
                log.info("vLLM imported in %.1f s; the engine is built for the first run", self.engine.import_vllm())
        except Exception:  # noqa: BLE001 - the first task (or a Reload) will load it instead
            log.exception("start-up load failed; will load on the first task")

    def serve_forever(self) -> None:
        self.start()
        log.info("generator %s serving on %s", self.generator_id, self.endpoint)
        try:
            while not self.stop.is_set():
                self.step()
        finally:
            self.shutdown()

    def step(self) -> int:
        """Read and serve one batch of tasks; returns the number of tasks read."""
        try:
            deliveries = self.queue.read(count=self.batch_size, block_ms=self.block_ms)
        except redis.RedisError:
            self.metrics.redis_errors.inc()
            log.exception("reading %s failed; retrying", keys.PROMPTS)
            self.stop.wait(1.0)
            return 0
        if deliveries:
            try:
                self.serve(deliveries)
            except redis.RedisError:
                self.metrics.redis_errors.inc()
                log.exception("forwarding failed; the tasks stay pending")
                self.stop.wait(1.0)
        return len(deliveries)

    def shutdown(self) -> None:
        self.stop.set()
        self.server.set_serving(False)
        self.registration.stop()
        self.server.stop()
        for thread in self._threads:
            thread.join(timeout=3)
        with self.lock:
            self.engine.close()
        self.client.close()

    # --- the work -------------------------------------------------------------------------------------

    def serve(self, deliveries: list[Delivery[types_pb2.PromptTask]]) -> None:
        by_policy: OrderedDict[Policy | None, list[Delivery]] = OrderedDict()
        for delivery in deliveries:
            task = delivery.message
            if not task.run_id or not task.prompt_id or not task.prompt:
                log.error("dropping malformed task %s (run %r, prompt %r)", delivery.entry_id, task.run_id,
                          task.prompt_id)
                self.metrics.tasks_dropped.labels("malformed").inc()
                self.queue.ack([delivery.entry_id])
                continue
            if self.stale_runs.stale(task.run_id):
                self.tasks_dropped_stale += 1
                self.metrics.tasks_dropped.labels("stale").inc()
                log.info("dropping task %s/%s of a run that is no longer active (%d dropped so far)",
                         task.run_id, task.prompt_id, self.tasks_dropped_stale)
                self.queue.ack([delivery.entry_id])
                continue
            if self.client.sismember(keys.done_key(task.run_id, "generate"), task.prompt_id):
                self.metrics.tasks_dropped.labels("duplicate").inc()
                self.queue.ack([delivery.entry_id])  # already generated (a redelivery): nothing to do
                continue
            by_policy.setdefault(self._required_policy(task), []).append(delivery)
        loaded = self.engine.policy
        # Serve what the loaded policy can serve first, then the rest in version order: fewest reloads.
        order = sorted(by_policy, key=lambda p: (p != loaded, p.version if p else -1))
        for policy in order:
            self._serve_group(policy, by_policy[policy])

    def _required_policy(self, task: types_pb2.PromptTask) -> Policy | None:
        version = int(task.policy.version)
        loaded = self.engine.policy
        if task.HasField("oldest_policy"):  # asynchronous: any version of the run the trainer still accepts
            oldest = int(task.oldest_policy.version)
            if loaded is not None and self.run_id == task.run_id and loaded.version >= oldest:
                return loaded
            record = self._record(task.run_id, fresh=True)
            if record is not None and record.policy_path and record.policy_version > max(version, oldest - 1):
                return Policy(record.policy_version, str(Path(record.policy_path).resolve()))  # the newest commit
        if task.policy.path:
            return Policy(version, str(Path(task.policy.path).resolve()))
        if loaded is not None and loaded.version == version:
            return loaded
        record = self._record(task.run_id, fresh=True)
        if record is not None:
            if record.policy_version == version and record.policy_path:
                return Policy(version, str(Path(record.policy_path).resolve()))
            if version == 0:
                return Policy(0, str(Path(record.spec.model.path).resolve()))
        return None

    def _serve_group(self, policy: Policy | None, deliveries: list[Delivery]) -> None:
        if policy is None:
            for delivery in deliveries:
                self._failed(delivery, f"policy v{delivery.message.policy.version} has no known path")
            return
        run_id = deliveries[0].message.run_id
        with self.lock:
            try:
                self.load(policy, run_id)
            except Exception as err:  # noqa: BLE001
                log.exception("cannot load policy v%d from %s", policy.version, policy.path)
                for delivery in deliveries:
                    self._failed(delivery, f"load failed: {err}")
                return
            version = policy.version
            outputs = self._generate_isolating(deliveries)
        for delivery, (result, seconds) in outputs:
            self._forward(delivery, result, version, seconds)

    def _generate_isolating(self, deliveries: list[Delivery]) -> list[tuple[Delivery, tuple]]:
        """Generate for all; if a prompt is rejected (by vLLM, or the chat template cannot render it), retry one
        by one so that one bad prompt drops alone."""
        tasks = [d.message for d in deliveries]
        started = time.perf_counter()
        try:
            results = self._engine_generate([prompt_of(t) for t in tasks],
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

    def _forward(self, delivery: Delivery, result: tuple | None, version: int, seconds: float) -> None:
        task: types_pb2.PromptTask = delivery.message
        prompt_token_ids, samples = result if result is not None else ([], [])
        group = sample_group(task, prompt_token_ids, samples, version, self.generator_id, seconds)
        out = scorer_stream(task)
        written = self.queue.forward(
            delivery, out, group, done_set=keys.done_key(task.run_id, "generate"), member=task.prompt_id
        )
        self._failures.pop(delivery.entry_id, None)
        if written and result is not None:
            self.tasks_done += 1
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

    # --- registration and reload notices --------------------------------------------------------------

    def _listen_reloads(self) -> None:
        while not self.stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(keys.RELOAD_CHANNEL)
                while not self.stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        self._on_reload_notice(message["data"])
            except redis.RedisError:
                log.warning("reload listener lost Redis; resubscribing", exc_info=True)
                self.stop.wait(1.0)
            finally:
                pubsub.close()

    def _on_reload_notice(self, payload: bytes) -> None:
        request = generator_pb2.ReloadRequest()
        try:
            request.ParseFromString(payload)
        except Exception:  # noqa: BLE001
            log.error("ignoring an undecodable reload notice")
            return
        if not request.policy.path:
            log.error("ignoring a reload notice without a path")
            return
        try:
            result = self.load(Policy(request.policy.version, request.policy.path), request.run_id)
            log.info("reload notice: v%d (%s, %.2f s)", result.version, result.mode, result.seconds)
        except Exception:  # noqa: BLE001 - the next task for that version reloads it
            log.exception("reload notice for v%d failed", request.policy.version)
