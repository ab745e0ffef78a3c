"""The one engine a generator has, shared by the work loop, the gRPC threads and the reload listener behind one
lock, with the counts its Status reports. Loading a run's policy first configures the engine for that run.

A version received in memory is the one of that run whatever path a later Reload or task names for it (its export,
written after the commit): loading it again is a no-op."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from semirl.generator.engine import EngineConfig, Generated, GenerationEngine, LoadResult, Policy, Prompt, Sampling
from semirl.generator.metrics import GeneratorMetrics
from semirl.generator.policies import RunPolicies, current_generation_policy, engine_config_for
from semirl.generator.weight_receiver import SemirlInitInfo, SemirlUpdateInfo
from semirl.proto import generator_pb2


class NotInGroup(Exception):  # noqa: N818
    """This generator cannot receive the run's weights in memory (it reloads from storage instead)."""


class SharedEngine:
    def __init__(self, engine: GenerationEngine, base_config: EngineConfig, policies: RunPolicies,
                 metrics: GeneratorMetrics) -> None:
        self.engine = engine
        self.base_config = base_config
        self.policies = policies
        self.metrics = metrics
        self.lock = threading.RLock()  # held across a load and the generation that needs it
        self.run_id = ""   # the run whose settings the engine is configured with
        self.reloads = 0
        self.tasks_done = 0

    @property
    def policy(self) -> Policy | None:
        return self.engine.policy

    def load(self, policy: Policy, run_id: str = "") -> LoadResult:
        with self.lock:
            held = self.engine.policy
            if (run_id and run_id == self.run_id and held is not None and held.in_memory
                    and held.version == policy.version):
                return LoadResult(held.version, 0.0, False, "noop")
            if run_id:
                self.engine.configure(engine_config_for(self.policies.record(run_id), self.base_config))
                self.run_id = run_id
            try:
                result = self.engine.load(policy)
            except Exception:
                self.metrics.reload_failures.inc()
                raise
            if result.reloaded:
                self._count_load(result.seconds)
            self.metrics.policy_version.set(result.version)
            return result

    def receive(self, run_id: str, version: int, init: SemirlInitInfo, update: SemirlUpdateInfo,
                still_wanted: Callable[[], bool] = lambda: True) -> float:
        """Receive `version` of `run_id` in memory. An engine configured for another run (or none: it served no
        task of this one yet) first loads the run's current export, in place; NotInGroup when there is no engine
        to receive into (building one does not fit in a transfer's deadline) or no record of the run."""
        with self.lock:
            if not still_wanted():  # the trainer gave up while this waited for the engine: its group is gone
                raise TimeoutError("the transfer's deadline passed before the engine was free")
            if not self.engine.ready:
                raise NotInGroup("no engine is built yet")
            if self.run_id != run_id:
                record = self.policies.record(run_id, fresh=True)
                if record is None:
                    raise NotInGroup(f"no record of run {run_id}")
                self.load(current_generation_policy(record), run_id)
            try:
                seconds = self.engine.receive(version, init, update)
            except Exception:
                self.metrics.reload_failures.inc()
                raise
            self._count_load(seconds)
            self.metrics.policy_version.set(version)
            return seconds

    def _count_load(self, seconds: float) -> None:
        """A new policy version in the engine, from storage or in memory: what Status and the metrics count."""
        self.reloads += 1
        self.metrics.reloads.inc()
        self.metrics.reload_seconds.observe(seconds)

    def generate(self, prompts: list[Prompt], sampling: list[Sampling]) -> tuple[int, list]:
        """Generate with whatever is loaded; returns (policy_version, results)."""
        with self.lock:
            if self.engine.policy is None:
                raise RuntimeError("no policy loaded")
            return self.engine.policy.version, self.generate_loaded(prompts, sampling)

    def generate_loaded(self, prompts: list[Prompt],
                        sampling: list[Sampling]) -> list[tuple[list[int], list[Generated]]]:
        """Generate with the loaded policy; the caller holds the lock."""
        started = time.perf_counter()
        results = self.engine.generate(prompts, sampling)
        self.metrics.generated(results, time.perf_counter() - started)
        return results

    def status(self, generator_id: str, *, weights_digest: bool = False) -> generator_pb2.GeneratorStatus:
        policy = self.engine.policy
        digest = ""
        if weights_digest:
            with self.lock:
                policy = self.engine.policy
                digest = self.engine.weights_digest()
        return generator_pb2.GeneratorStatus(
            generator_id=generator_id,
            run_id=self.run_id,
            policy_version=policy.version if policy else 0,
            policy_path=policy.path if policy else "",
            engine_ready=self.engine.ready,
            tasks_done=self.tasks_done,
            reloads=self.reloads,
            weights_digest=digest,
        )

    def close(self) -> None:
        with self.lock:
            self.engine.close()
