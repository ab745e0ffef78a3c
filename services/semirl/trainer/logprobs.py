"""Sequence logprobs of responses given prompts, from token ids (never re-tokenized)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class SeqBatch:
    input_ids: torch.Tensor       # [B, T] prompt + response, right-padded
    attention_mask: torch.Tensor  # [B, T] 1 on real tokens
    response_mask: torch.Tensor   # [B, T] 1 on response tokens


@dataclass
class SeqLogps:
    logps: torch.Tensor      # [B] sum of response-token logprobs
    tokens: torch.Tensor     # [B] response tokens (float)
    entropy: torch.Tensor    # [B] mean token entropy over the response


def build_batch(
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]], pad_token_id: int = 0
) -> SeqBatch:
    """Right-padded batch of (prompt_token_ids, response_token_ids)."""
    if not sequences:
        raise ValueError("empty batch")
    length = max(len(p) + len(r) for p, r in sequences)
    size = len(sequences)
    input_ids = torch.full((size, length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((size, length), dtype=torch.long)
    response_mask = torch.zeros((size, length), dtype=torch.bool)
    for row, (prompt, response) in enumerate(sequences):
        if not prompt:
            raise ValueError("a prompt needs at least one token to condition the response on")
        ids = list(prompt) + list(response)
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        response_mask[row, len(prompt) : len(ids)] = True
    return SeqBatch(input_ids, attention_mask, response_mask)


def sequence_logps(model: torch.nn.Module, batch: SeqBatch, *, entropy_grad: bool = False) -> SeqLogps:
    """Summed logprobs of the response tokens (token i is predicted from the logits at position i−1).

    The mean token entropy is returned too; it carries gradients only with `entropy_grad` (entropy bonus).
    """
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    logits = logits[:, :-1].float()
    labels = batch.input_ids[:, 1:]
    mask = batch.response_mask[:, 1:].to(logits.dtype)
    log_probs = torch.log_softmax(logits, dim=-1)
    token_logps = torch.gather(log_probs, 2, labels.unsqueeze(-1)).squeeze(-1)
    tokens = mask.sum(-1)
    logps = (token_logps * mask).sum(-1)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        source = log_probs if entropy_grad else log_probs.detach()
        token_entropy = -(source.exp() * source).sum(-1)
        entropy = (token_entropy * mask).sum(-1) / tokens.clamp(min=1)
    return SeqLogps(logps=logps, tokens=tokens, entropy=entropy)
