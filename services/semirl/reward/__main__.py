"""`python -m semirl.reward`: the reward-model service process (an HF sequence classifier)."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from semirl.core.lifecycle import add_worker_arguments, configure_logging, serve_until_stopped
from semirl.reward.engine import RewardEngineConfig
from semirl.reward.service import RewardService


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, "reward")
    config = RewardEngineConfig(model_path=args.model, dtype=args.dtype, max_length=args.max_length,
                                score_token=args.score_token, prompt_format=args.prompt_format,
                                max_batch_tokens=args.max_batch_tokens)
    service = RewardService(args.redis_url, args.grpc_port, args.reward_id, config,
                            advertise_host=args.advertise_host)
    return serve_until_stopped(service, args.metrics_port, "batch")


if __name__ == "__main__":
    sys.exit(main())
