"""Sequence logprobs of responses given prompts, from token ids (never re-tokenized).

The memory-lean path never builds the [B, T, V] logits. The backbone gives hidden states [B, T, H]; only the
positions that predict a response token (position i−1 predicts token i) go through the output head, in chunks of
`chunk_tokens` positions, and each chunk's logits live in fp32 only while that chunk's token logprob
(logit[label] − logsumexp) and entropy (logsumexp − Σ softmax·logits) are taken. Each chunk is under
activation checkpointing, so the backward pass recomputes its logits instead of keeping them: at most one
[chunk_tokens, V] fp32 block (and its few temporaries) is alive at a time, in the forward and in the backward.

Under DeepSpeed the computation still runs as one call of the wrapped model's root module and one call of its
output head (their `forward` is swapped for the call's duration): the engine's forward arms its backward
bookkeeping on the outputs, ZeRO-3 resets its parameter trace at the root and gathers the head's weight once in
the forward and once in the backward, and every rank makes the same module calls whatever its token count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.functional import linear
from torch.utils.checkpoint import checkpoint

# Response positions per head chunk. At Llama-3's 128,256-token vocabulary one chunk's fp32 logits are 263 MB
# (vs 4.2 GB for a 4 × 2,048-token micro batch in full), and a [512, 4096] × [4096, 128256] matmul is still large
# enough to keep a GPU busy.
DEFAULT_CHUNK_TOKENS = 512

Project = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SeqBatch:
    input_ids: torch.Tensor       # [B, T] prompt + response, right-padded
    attention_mask: torch.Tensor  # [B, T] 1 on real tokens
    response_mask: torch.Tensor   # [B, T] 1 on response tokens


@dataclass
class SeqLogps:
    logps: torch.Tensor        # [B] sum of response-token logprobs
    tokens: torch.Tensor       # [B] response tokens (float)
    entropy: torch.Tensor      # [B] mean token entropy over the response
    token_logps: torch.Tensor  # [B, T-1] logprob of token i+1 at column i; 0 where that token is not a response token
    mask: torch.Tensor | None = None  # [B, T-1] True where column i predicts a response token


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


def sequence_logps(
    model: torch.nn.Module, batch: SeqBatch, *, entropy_grad: bool = False,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> SeqLogps:
    """Summed and per-token logprobs of the response tokens, and their mean token entropy.

    `model` is an HF causal LM or a DeepSpeed engine wrapping one. The entropy carries gradients only with
    `entropy_grad` (entropy bonus). A module without an output head (`get_output_embeddings`) is called whole and
    its `.logits` are used, on the response positions only.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    predictors = batch.response_mask[:, 1:].bool()
    rows, cols = predictors.nonzero(as_tuple=True)
    labels = batch.input_ids[rows, cols + 1]
    hf = getattr(model, "module", model)
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    stats = _lean_stats if head is not None else _full_logits_stats
    token_logps, token_entropy = stats(model, batch, rows, cols, labels, entropy_grad, chunk_tokens)
    return _per_sequence(token_logps, token_entropy, rows, cols, predictors)


# --- the lean path ---------------------------------------------------------------------------------------


def _lean_stats(
    model: torch.nn.Module, batch: SeqBatch, rows: torch.Tensor, cols: torch.Tensor, labels: torch.Tensor,
    entropy_grad: bool, chunk_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    hf = getattr(model, "module", model)
    head = hf.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(f"lean logprobs need a linear output head; this model's is {type(head).__name__}")
    backbone = hf.get_decoder()
    if backbone is hf:
        raise ValueError(f"{type(hf).__name__} exposes no separate backbone (get_decoder) to run without its head")
    transform = _logit_transform(hf.config)

    def head_forward(hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # head.weight is read per call: under ZeRO-3 it is whole only inside the head's forward and, in the
        # backward pass (where checkpointing recomputes the chunks), after DeepSpeed's pre-backward gather.
        def project(h: torch.Tensor) -> torch.Tensor:
            return transform(linear(h, head.weight, head.bias).float())

        return _chunked_token_stats(project, hidden, targets, entropy_grad=entropy_grad, chunk_tokens=chunk_tokens)

    def root_forward(
        input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return head(hidden[rows, cols], labels)

    with _forward_replaced(head, head_forward), _forward_replaced(hf, root_forward):
        return model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, rows=rows, cols=cols, labels=labels
        )


def _logit_transform(config: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the HF model's forward does to the head's output before returning logits, as its config declares it:
    `logit_scale` (Cohere, multiplies), `logits_scaling` (Granite, MiniCPM3: divides) and
    `final_logit_softcapping` (Gemma 2/3: cap·tanh(logits/cap))."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    scale = 1.0
    if getattr(text, "logit_scale", None) is not None:
        scale *= float(text.logit_scale)
    if getattr(text, "logits_scaling", None) is not None:
        scale /= float(text.logits_scaling)
    cap = getattr(text, "final_logit_softcapping", None)
    cap = float(cap) if cap else None

    def apply(logits: torch.Tensor) -> torch.Tensor:
        if scale != 1.0:
            logits = logits * scale
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return apply


@contextmanager
def _forward_replaced(module: torch.nn.Module, forward: Callable[..., Any]) -> Iterator[None]:
    """`module(...)` runs `forward` (with all of the module's hooks) until the block ends."""
    had_own = "forward" in module.__dict__
    previous = module.__dict__.get("forward")
    module.forward = forward
    try:
        yield
    finally:
        if had_own:
            module.forward = previous
        else:
            del module.forward


# --- shared by both paths --------------------------------------------------------------------------------


def _chunked_token_stats(
    project: Project, inputs: torch.Tensor, labels: torch.Tensor, *, entropy_grad: bool, chunk_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token logprobs and entropies [N] of `labels` under the fp32 logits `project(inputs[chunk])`, a chunk at a
    time; with gradients on, each chunk is checkpointed so its logits are recomputed in the backward pass."""
    compute = _chunk_stats(project, entropy_grad)
    logps, entropies = [], []
    # At least one (maybe empty) chunk: the outputs then always depend on the head, so ZeRO-3 gathers its weight
    # in the backward pass on every rank, whatever that rank's token count.
    for start in range(0, max(len(labels), 1), chunk_tokens):
        chunk, targets = inputs[start : start + chunk_tokens], labels[start : start + chunk_tokens]
        if torch.is_grad_enabled():
            # The chunk function is deterministic: no RNG state to save and restore.
            logp, entropy = checkpoint(compute, chunk, targets, use_reentrant=False, preserve_rng_state=False)
        else:
            logp, entropy = compute(chunk, targets)
        logps.append(logp)
        entropies.append(entropy)
    return torch.cat(logps), torch.cat(entropies)


def _chunk_stats(
    project: Project, entropy_grad: bool
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    def compute(inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = project(inputs)
        lse = torch.logsumexp(logits, dim=-1)
        logp = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - lse
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            probs = torch.softmax(logits, dim=-1)
            entropy = lse - (probs * logits).sum(-1)
        return logp, entropy

    return compute


def _full_logits_stats(
    model: torch.nn.Module, batch: SeqBatch, rows: torch.Tensor, cols: torch.Tensor, labels: torch.Tensor,
    entropy_grad: bool, chunk_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    return _chunked_token_stats(
        lambda x: x.float(), logits[rows, cols], labels, entropy_grad=entropy_grad, chunk_tokens=chunk_tokens
    )


def _per_sequence(
    token_logps: torch.Tensor, token_entropy: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
    predictors: torch.Tensor,
) -> SeqLogps:
    per_token = token_logps.new_zeros(predictors.shape).index_put((rows, cols), token_logps)
    entropy_sum = token_entropy.new_zeros(predictors.shape).index_put((rows, cols), token_entropy).sum(-1)
    tokens = predictors.to(per_token.dtype).sum(-1)
    return SeqLogps(
        logps=per_token.sum(-1), tokens=tokens, entropy=entropy_sum / tokens.clamp(min=1), token_logps=per_token,
        mask=predictors,
    )
