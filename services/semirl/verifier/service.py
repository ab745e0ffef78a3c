"""The verifier worker: sample groups from `to_verify` in, scored groups out (DESIGN §2).

Each `SampleGroup` is scored sample by sample against its task's gold answer (math-verify in a worker process
with a hard per-item timeout) and forwarded as a `ScoredGroup` (rewards in sample order) to `scored` for
training tasks or `eval_scored` for evaluation tasks, at most once per (run, prompt_id). The direct path is
the VerifierService.Verify RPC. A group with no samples (a task the generator gave up on) is scored to a
`ScoredGroup` with no rewards. Groups of runs that are no longer active are acked and dropped.
"""

from __future__ import annotations

import logging
import threading

import grpc
import redis

from semirl.core import keys
from semirl.core.grpc_server import ServiceServer
from semirl.core.runstate import StaleRunFilter
from semirl.core.streams import Delivery, StreamQueue
from semirl.proto import types_pb2, verifier_pb2, verifier_pb2_grpc
from semirl.verifier.scoring import DEFAULT_TIMEOUT_S, Scorer

log = logging.getLogger(__name__)


class VerifierServicer(verifier_pb2_grpc.VerifierServiceServicer):
    def __init__(self, scorer: Scorer, timeout_s: float) -> None:
        self.scorer = scorer
        self.timeout_s = timeout_s

    def Verify(self, request: verifier_pb2.VerifyRequest, context: grpc.ServicerContext):  # noqa: N802
        rewards = self.scorer.score_batch([(i.response, i.gold_answer) for i in request.items], self.timeout_s)
        return verifier_pb2.VerifyResponse(rewards=rewards)


def output_stream(task: types_pb2.PromptTask) -> str:
    return keys.EVAL_SCORED if task.purpose == types_pb2.TASK_PURPOSE_EVAL else keys.SCORED


class VerifierService:
    def __init__(
        self,
        redis_url: str,
        grpc_port: int,
        verifier_id: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        batch_size: int = 16,
        block_ms: int = 1000,
    ) -> None:
        self.verifier_id = verifier_id
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.stop = threading.Event()
        self.client = redis.Redis.from_url(redis_url)
        self.scorer = Scorer(timeout_s)
        self.queue: StreamQueue[types_pb2.SampleGroup] = StreamQueue(
            self.client, keys.TO_VERIFY, keys.VERIFIERS_GROUP, verifier_id, types_pb2.SampleGroup
        )
        self.server = ServiceServer(f"0.0.0.0:{grpc_port}", "semirl.v1.VerifierService")
        self.server.add(
            verifier_pb2_grpc.add_VerifierServiceServicer_to_server, VerifierServicer(self.scorer, timeout_s)
        )
        self.port = self.server.port
        self.groups_scored = 0
        self.stale_runs = StaleRunFilter(self.client)
        self.groups_dropped_stale = 0

    def start(self) -> None:
        self.scorer.start()
        self.server.start()
        self.server.set_serving(True)

    def serve_forever(self) -> None:
        self.start()
        log.info("verifier %s serving gRPC on :%d", self.verifier_id, self.port)
        try:
            while not self.stop.is_set():
                self.step()
        finally:
            self.shutdown()

    def step(self) -> int:
        try:
            deliveries = self.queue.read(count=self.batch_size, block_ms=self.block_ms)
            for delivery in deliveries:
                self.handle(delivery)
            return len(deliveries)
        except redis.RedisError:
            log.exception("Redis error; retrying")
            self.stop.wait(1.0)
            return 0

    def handle(self, delivery: Delivery[types_pb2.SampleGroup]) -> bool:
        group = delivery.message
        task = group.task
        if not task.run_id or not task.prompt_id:
            log.error("dropping malformed group %s", delivery.entry_id)
            self.queue.ack([delivery.entry_id])
            return False
        if self.stale_runs.stale(task.run_id):
            self.groups_dropped_stale += 1
            log.info("dropping group %s/%s of a run that is no longer active (%d dropped so far)",
                     task.run_id, task.prompt_id, self.groups_dropped_stale)
            self.queue.ack([delivery.entry_id])
            return False
        done_set = keys.done_key(task.run_id, "verify")
        if self.client.sismember(done_set, task.prompt_id):
            rewards: list[float] = []  # a redelivery: forward acks it and writes nothing
        else:
            items = [(s.text, task.gold_answer) for s in group.samples]
            rewards = self.scorer.score_batch(items, self.timeout_s) if items else []
        scored = types_pb2.ScoredGroup(group=group, rewards=rewards, scorer_id=self.verifier_id)
        written = self.queue.forward(delivery, output_stream(task), scored, done_set=done_set, member=task.prompt_id)
        if written:
            self.groups_scored += 1
        return written

    def shutdown(self) -> None:
        self.stop.set()
        self.server.set_serving(False)
        self.server.stop()
        self.scorer.close()
        self.client.close()
