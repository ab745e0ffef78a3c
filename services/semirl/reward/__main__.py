"""`python -m semirl.reward`: the reward-model service process (an HF sequence classifier)."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from semirl.core.redis_client import connect
from semirl.core.worker import add_worker_arguments, configure_logging, serve_until_stopped
from semirl.proto import reward_pb2_grpc
from semirl.reward.engine import RewardEngine, RewardEngineConfig
from semirl.reward.grpc_api import RewardServicer
from semirl.reward.loop import RewardWorker
from semirl.reward.metrics import RewardMetrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="semirl.reward", description="semirl reward-model scorer")
    add_worker_arguments(parser, grpc_port=50054)
    parser.add_argument("--reward-id",
                        default=os.environ.get("SEMIRL_REWARD_ID") or f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--model", default=os.environ.get("SEMIRL_REWARD_MODEL"),
                        help="HF sequence-classification checkpoint (one label) (default SEMIRL_REWARD_MODEL)")
    parser.add_argument("--dtype", default=os.environ.get("SEMIRL_REWARD_DTYPE", "float32"),
                        choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max-length", type=int, default=int(os.environ.get("SEMIRL_REWARD_MAX_LENGTH", 4096)),
                        help="tokens the model reads; longer inputs lose the prompt's left")
    parser.add_argument("--score-token", default=os.environ.get("SEMIRL_REWARD_SCORE_TOKEN") or None,
                        help="a token appended to every input, whose output is the score (Athene-RM-8B: "
                        "<|reserved_special_token_1|>); default: the last token")
    parser.add_argument("--prompt-format", default=os.environ.get("SEMIRL_REWARD_PROMPT_FORMAT", "chat"),
                        choices=["chat", "raw"])
    parser.add_argument("--max-batch-tokens", type=int,
                        default=int(os.environ.get("SEMIRL_REWARD_MAX_BATCH_TOKENS", 16384)))
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("--model (or SEMIRL_REWARD_MODEL) is required")
    return args


def build_reward(redis_url: str, grpc_port: int, reward_id: str, config: RewardEngineConfig, *,
                 advertise_host: str = "127.0.0.1", batch_size: int = 16) -> RewardWorker:
    """The reward worker with its servicer: the Score RPC and the stream loop share one model behind one lock."""
    metrics = RewardMetrics()
    worker = RewardWorker(connect(redis_url), reward_id, RewardEngine(config), metrics, grpc_port=grpc_port,
                          batch_size=batch_size, advertise_host=advertise_host)
    worker.server.add(reward_pb2_grpc.add_RewardServiceServicer_to_server,
                      RewardServicer(worker.score_pairs, metrics, config.model_path))
    return worker


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, "reward")
    config = RewardEngineConfig(model_path=args.model, dtype=args.dtype, max_length=args.max_length,
                                score_token=args.score_token, prompt_format=args.prompt_format,
                                max_batch_tokens=args.max_batch_tokens)
    worker = build_reward(args.redis_url, args.grpc_port, args.reward_id, config, advertise_host=args.advertise_host)
    return serve_until_stopped(worker, args.metrics_port)


if __name__ == "__main__":
    sys.exit(main())
