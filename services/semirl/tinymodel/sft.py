"""Deterministic supervised warm start on (prompt, response) pairs: loss on response tokens only.

Prompts are encoded as the generator encodes a chat task (core/chat.py), so the seed learns from exactly
the token ids it will be prompted with.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from semirl.core.chat import chat_token_ids


@dataclass(frozen=True)
class SFTConfig:
    max_steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    seed: int = 0
    check_every: int = 25          # call `stop_when` every this many steps
    min_steps: int = 0


def encode_pairs(tokenizer: PreTrainedTokenizerFast,
                 pairs: list[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """(ids = chat-rendered prompt, response, <eos>; index of the first response token)."""
    encoded = []
    for prompt, response in pairs:
        p = chat_token_ids(tokenizer, prompt)
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        encoded.append((p + r, len(p)))
    return encoded


def _batch(items: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    for i, (ids, start) in enumerate(items):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        attention[i, :len(ids)] = 1
        labels[i, start:len(ids)] = torch.tensor(ids[start:])
    return input_ids, attention, labels


def epoch_batches(count: int, batch_size: int, rng: random.Random) -> Iterator[list[int]]:
    """Indices of batches of `batch_size` drawn without replacement, the order reshuffled whenever fewer than a
    batch are left (the remainder carries over into the next epoch); endless."""
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            fresh = list(range(count))
            rng.shuffle(fresh)
            order += fresh
        yield order[:batch_size]
        del order[:batch_size]


def sft(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, pairs: list[tuple[str, str]],
        config: SFTConfig, stop_when: Callable[[int], bool] | None = None) -> int:
    """Train in place; returns the number of steps taken. `stop_when(step)` may end training early."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    data = encode_pairs(tokenizer, pairs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps)))
    model.train()
    batches = epoch_batches(len(data), config.batch_size, rng)
    step = 0
    while step < config.max_steps:
        batch = [data[i] for i in next(batches)]
        input_ids, attention, labels = _batch(batch, tokenizer.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        step += 1
        if (stop_when is not None and step >= config.min_steps and step % config.check_every == 0
                and stop_when(step)):
            break
    model.eval()
    return step
