"""The generator's Prometheus metrics (its own registry, core/telemetry.py; served by `python -m semirl.generator
--metrics-port`): tasks served, samples and tokens generated, empty groups and failed attempts, dropped tasks,
reloads and their duration, the loaded version."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from semirl.core import telemetry
from semirl.core.worker import WorkerMetrics
from semirl.generator.engine import Generated


class GeneratorMetrics(WorkerMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("generator", "tasks", "Tasks acked without generating (stale: their run has ended; "
                         "malformed; duplicate: already generated)", registry)
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
        self.reloads = Counter("semirl_generator_reloads", "Policy loads that changed the engine's weights",
                               registry=r)
        self.reload_failures = Counter("semirl_generator_reload_failures", "Policy loads that failed", registry=r)
        self.reload_seconds = Histogram("semirl_generator_reload_seconds", "Time of a policy load that changed the "
                                        "weights", registry=r, buckets=telemetry.SECONDS_BUCKETS)
        self.policy_version = Gauge("semirl_generator_policy_version", "Policy version loaded (-1: none)",
                                    registry=r)
        self.policy_version.set(-1)

    def generated(self, results: list[tuple[list[int], list[Generated]]], seconds: float) -> None:
        self.generate_seconds.observe(seconds)
        self.samples.inc(sum(len(samples) for _, samples in results))
        self.tokens.inc(sum(len(s.token_ids) for _, samples in results for s in samples))
        self.prompt_tokens.inc(sum(len(prompt_ids) for prompt_ids, _ in results))
