"""Benchmark: peak memory and time of the trainer's sequence logprobs, the naive full log-softmax over [B, T, V]
logits against the lean path (backbone + chunked, checkpointed head over the response positions only), on a
random Llama with Llama-3's 128,256-token vocabulary but a small hidden size and two layers, so that it runs on a
CPU. Each path runs forward + backward in its own subprocess; its peak memory is the growth of the process's peak
RSS over a baseline taken once the model and the batch exist. Also written: the analytic tensor sizes at
Llama-3.1-8B scale (micro batch of 4 sequences × 2,048 tokens).

    python -m bench.logprobs_memory [--batch 4 --seq 1024 --response 768] [--out bench/results/logprobs_memory.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from semirl.trainer.logprobs import DEFAULT_CHUNK_TOKENS, SeqBatch, build_batch, sequence_logps

LLAMA3_VOCAB = 128_256
LLAMA3_8B_HIDDEN = 4096


def _naive_logps(model: torch.nn.Module, batch: SeqBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The path the lean one replaced: full logits, cast to fp32, full log-softmax and its exp for the entropy."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    mask = batch.response_mask[:, 1:].float()
    token_logps = torch.gather(log_probs, 2, batch.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        entropy = (-(log_probs.exp() * log_probs).sum(-1) * mask).sum(-1) / mask.sum(-1)
    return (token_logps * mask).sum(-1), entropy


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=args.seq, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(1)
    prompt = args.seq - args.response
    batch = build_batch([
        (torch.randint(1, args.vocab, (prompt,), generator=gen).tolist(),
         torch.randint(1, args.vocab, (args.response,), generator=gen).tolist())
        for _ in range(args.batch)
    ])
    baseline = _peak_rss_bytes()
    times = []
    for _ in range(args.repeats):
        model.zero_grad(set_to_none=True)
        started = time.perf_counter()
        if args.worker == "naive":
            logps, _ = _naive_logps(model, batch)
        else:
            logps = sequence_logps(model, batch, chunk_tokens=args.chunk_tokens).logps
        logps.sum().backward()
        times.append(time.perf_counter() - started)
    return {"peak_bytes": _peak_rss_bytes() - baseline, "times_s": times, "best_s": min(times)}


def _run_worker(path: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.logprobs_memory", "--worker", path]
    for name in ("vocab", "hidden", "layers", "batch", "seq", "response", "chunk_tokens", "repeats"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def llama3_8b_sizes(chunk_tokens: int, sequences: int = 4, seq: int = 2048) -> dict[str, Any]:
    """Bytes of the tensors each path keeps alive per micro batch at Llama-3.1-8B scale."""
    positions = sequences * seq
    full_fp32 = positions * LLAMA3_VOCAB * 4
    chunk_fp32 = chunk_tokens * LLAMA3_VOCAB * 4
    return {
        "vocab": LLAMA3_VOCAB, "sequences": sequences, "tokens_per_sequence": seq, "chunk_tokens": chunk_tokens,
        "full_logits_bf16_bytes": positions * LLAMA3_VOCAB * 2,
        "full_logits_fp32_bytes": full_fp32,
        "full_log_softmax_fp32_bytes": full_fp32,
        "chunk_logits_fp32_bytes": chunk_fp32,
        "hidden_states_bf16_bytes": positions * LLAMA3_8B_HIDDEN * 2,
        "full_fp32_over_chunk": full_fp32 / chunk_fp32,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=LLAMA3_VOCAB)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--response", type=int, default=768)
    parser.add_argument("--chunk-tokens", type=int, default=DEFAULT_CHUNK_TOKENS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/logprobs_memory.json"))
    parser.add_argument("--worker", choices=("naive", "lean"), help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    naive, lean = _run_worker("naive", args), _run_worker("lean", args)
    results = {
        "setup": {
            "model": f"random Llama, {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, fp32",
            "batch": f"{args.batch} sequences x {args.seq} tokens ({args.response} response)",
            "chunk_tokens": args.chunk_tokens, "measured": "forward + backward; peak RSS growth over the built model",
            "torch_threads": torch.get_num_threads(),
        },
        "naive": naive,
        "lean": lean,
        "peak_memory_ratio_naive_over_lean": naive["peak_bytes"] / lean["peak_bytes"],
        "time_ratio_lean_over_naive": lean["best_s"] / naive["best_s"],
        "llama3_8b": llama3_8b_sizes(args.chunk_tokens),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
