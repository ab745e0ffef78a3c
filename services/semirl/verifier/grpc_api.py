"""The verifier's gRPC servicer: Verify, the direct path (its items carry no answer format: they are read as LATEX),
on the same scoring worker as the stream loop."""

from __future__ import annotations

import grpc

from semirl.proto import verifier_pb2, verifier_pb2_grpc
from semirl.verifier.engine import Scorer
from semirl.verifier.metrics import VerifierMetrics


class VerifierServicer(verifier_pb2_grpc.VerifierServiceServicer):
    def __init__(self, scorer: Scorer, timeout_s: float, metrics: VerifierMetrics | None = None) -> None:
        self.scorer = scorer
        self.timeout_s = timeout_s
        self.metrics = metrics

    def Verify(self, request: verifier_pb2.VerifyRequest, context: grpc.ServicerContext):  # noqa: N802
        rewards = self.scorer.score_batch([(i.response, i.gold_answer) for i in request.items], self.timeout_s)
        if self.metrics is not None:
            self.metrics.rpc_items.inc(len(rewards))
        return verifier_pb2.VerifyResponse(rewards=rewards)
