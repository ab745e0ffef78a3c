"""The verifier worker: sample groups from `to_verify` in, scored groups out (docs/architecture.md, data flow).

Each `SampleGroup` is scored sample by sample against its task's gold answer, reading each response's answer as
the task's `answer_format` says (math-verify in a worker process with a hard per-item timeout, verifier/engine.py),
and forwarded as a `ScoredGroup` (rewards in sample order) to `scored` for training tasks or `eval_scored` for
evaluation tasks, at most once per (run, prompt_id): the loop both scorers share (core/group_scoring.py). A group
with no samples (a task the generator gave up on) is scored to a `ScoredGroup` with no rewards.
"""

from __future__ import annotations

import time

import redis

from semirl.core.group_scoring import GroupScorer
from semirl.core.rewards import is_correct, split_per_group
from semirl.core.streams import Delivery
from semirl.core.wire import answer_format_of
from semirl.proto import types_pb2
from semirl.verifier.engine import BOXED_MARKERS, Scorer
from semirl.verifier.metrics import VerifierMetrics


def outcome(response: str, reward: float) -> str:
    """How a sample scored: correct, incorrect (incl. timed out: see semirl_verifier_timeouts_total) or
    no_answer (no boxed answer to check)."""
    if is_correct(reward):
        return "correct"
    return "incorrect" if any(marker in response for marker in BOXED_MARKERS) else "no_answer"


class VerifierWorker(GroupScorer):
    """math-verify over `to_verify`."""

    service = "verifier"
    grpc_service = "semirl.v1.VerifierService"
    source = types_pb2.REWARD_SOURCE_VERIFIER
    metrics: VerifierMetrics

    def __init__(self, client: redis.Redis, verifier_id: str, scorer: Scorer, metrics: VerifierMetrics, *,
                 grpc_port: int, timeout_s: float, batch_size: int = 16, block_ms: int = 1000,
                 advertise_host: str = "127.0.0.1") -> None:
        super().__init__(client, verifier_id, metrics, grpc_port=grpc_port, advertise_host=advertise_host,
                         batch_size=batch_size, block_ms=block_ms)
        self.scorer = scorer
        self.timeout_s = timeout_s

    def on_start(self) -> None:
        self.scorer.start()

    def score_groups(self, groups: list[Delivery[types_pb2.SampleGroup]]) -> dict[str, list[float]]:
        """Each group's rewards (by entry id), all groups' samples scored in one batch."""
        items = [(sample.text, d.message.task.gold_answer, answer_format_of(d.message.task))
                 for d in groups for sample in d.message.samples]
        started = time.perf_counter()
        scores = self.scorer.score_items(items, self.timeout_s) if items else []
        per_item = (time.perf_counter() - started) / len(items) if items else 0.0
        counts = [len(d.message.samples) for d in groups]
        for count in counts:
            if count:  # one observation per group, as when groups were scored one by one
                self.metrics.scoring_seconds.observe(per_item * count)
        return {d.entry_id: rewards for d, rewards in zip(groups, split_per_group(scores, counts), strict=True)}

    def observe_forwarded(self, group: types_pb2.SampleGroup, rewards: list[float]) -> None:
        for sample, reward in zip(group.samples, rewards, strict=False):
            self.metrics.samples_scored.labels(outcome(sample.text, reward)).inc()

    def close(self) -> None:
        self.scorer.close()
