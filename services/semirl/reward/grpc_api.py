"""The reward service's gRPC servicer: Score, the direct path, on the same model as the stream loop."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from semirl.proto import reward_pb2, reward_pb2_grpc
from semirl.reward.engine import RewardScore
from semirl.reward.metrics import RewardMetrics

ScorePairs = Callable[[list[tuple[str, str]]], list[RewardScore]]


class RewardServicer(reward_pb2_grpc.RewardServiceServicer):
    def __init__(self, score_pairs: ScorePairs, metrics: RewardMetrics, model: str) -> None:
        self.score_pairs = score_pairs  # serialized with the stream loop's scoring (reward/loop.py)
        self.metrics = metrics
        self.model = model

    def Score(self, request: reward_pb2.ScoreRequest, context: grpc.ServicerContext):  # noqa: N802
        results = self.score_pairs([(request.prompt, response) for response in request.responses])
        self.metrics.rpc_items.inc(len(results))
        return reward_pb2.ScoreResponse(scores=[r.score for r in results], truncated=[r.truncated for r in results],
                                        model=self.model)
