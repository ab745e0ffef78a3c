"""Batched sampling with transformers and the task's verifier (boxed exact match), used for calibration.

Prompts are chat-rendered token ids, as the generator gives them to vLLM for a chat task.
"""

from __future__ import annotations

import re

import torch
from transformers import GenerationConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from semirl.core.chat import chat_token_ids

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def left_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of `rows`, padded on the left so every row ends where generation starts."""
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, width - len(ids):] = torch.tensor(ids)
        attention[i, width - len(ids):] = 1
    return input_ids, attention


def boxed_answer(text: str) -> str | None:
    match = _BOXED.search(text)
    return match.group(1).strip() if match else None


def is_correct(response: str, answer: str) -> bool:
    return boxed_answer(response) == answer.strip()


@torch.no_grad()
def sample(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, prompts: list[str], n: int,
           temperature: float, top_p: float, max_new_tokens: int, seed: int,
           batch_size: int = 512) -> list[list[list[int]]]:
    """`n` completions (token ids, up to and including eos) for each prompt, prompted as a chat task."""
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    config = GenerationConfig(
        do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
        top_p=top_p if temperature > 0 else None, top_k=None, max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    encoded = [chat_token_ids(tokenizer, p) for p in prompts]
    flat = [ids for ids in encoded for _ in range(n)]
    out: list[list[int]] = []
    for start in range(0, len(flat), batch_size):
        input_ids, attention = left_padded(flat[start:start + batch_size], tokenizer.pad_token_id)
        gen = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config)
        for row in gen[:, input_ids.shape[1]:].tolist():
            ids: list[int] = []
            for tok in row:
                if tok == tokenizer.pad_token_id:
                    break
                ids.append(tok)
                if tok == tokenizer.eos_token_id:
                    break
            out.append(ids)
    model.train(was_training)
    return [out[i * n:(i + 1) * n] for i in range(len(prompts))]


def accuracy(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, rows: list[dict[str, str]],
             n: int = 4, temperature: float = 0.6, top_p: float = 0.9, max_new_tokens: int = 24,
             seed: int = 0) -> float:
    """Mean verifier reward over `n` samples per problem (the eval protocol: temperature 0.6, top_p 0.9)."""
    samples = sample(model, tokenizer, [r["problem"] for r in rows], n, temperature, top_p, max_new_tokens, seed)
    hits = [is_correct(tokenizer.decode(ids, skip_special_tokens=True), row["answer"])
            for row, group in zip(rows, samples, strict=True) for ids in group]
    return sum(hits) / len(hits)
