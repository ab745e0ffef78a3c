"""The one engine a generator has, shared by the work loop, the gRPC threads and the reload listener behind one
lock, with the counts its Status reports. Loading a run's policy first configures the engine for that run."""

from __future__ import annotations

import threading
import time

from semirl.generator.engine import EngineConfig, Generated, GenerationEngine, LoadResult, Policy, Prompt, Sampling
from semirl.generator.metrics import GeneratorMetrics
from semirl.generator.policies import RunPolicies, engine_config_for
from semirl.proto import generator_pb2


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
            if run_id:
                self.engine.configure(engine_config_for(self.policies.record(run_id), self.base_config))
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
            return self.engine.policy.version, self.generate_loaded(prompts, sampling)

    def generate_loaded(self, prompts: list[Prompt],
                        sampling: list[Sampling]) -> list[tuple[list[int], list[Generated]]]:
        """Generate with the loaded policy; the caller holds the lock."""
        started = time.perf_counter()
        results = self.engine.generate(prompts, sampling)
        self.metrics.generated(results, time.perf_counter() - started)
        return results

    def status(self, generator_id: str) -> generator_pb2.GeneratorStatus:
        policy = self.engine.policy
        return generator_pb2.GeneratorStatus(
            generator_id=generator_id,
            run_id=self.run_id,
            policy_version=policy.version if policy else 0,
            policy_path=policy.path if policy else "",
            engine_ready=self.engine.ready,
            tasks_done=self.tasks_done,
            reloads=self.reloads,
        )

    def close(self) -> None:
        with self.lock:
            self.engine.close()
