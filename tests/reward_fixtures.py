"""A tiny random reward model for tests: a Llama sequence classifier with the project's tiny tokenizer (shared by
tests/unit/test_reward_engine.py and tests/integration/test_reward_service.py; tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from semirl.tinymodel.tokenizer import train_tokenizer

SCORE_TOKEN = "<|score|>"
TEXTS = ["What is 12+30?", "The answer is \\boxed{42}.", "Let me add the columns: 2+0=2, 1+3=4.", "hello world"]


def build_model_dir(path: Path, num_labels: int = 1, pad: bool = True, seed: int = 0) -> Path:
    """A tiny random Llama classifier with the project's tiny tokenizer (plus a score token) saved beside it.

    The head is drawn at std 1 (HF's default 0.02 would make every score ~0, and every comparison trivially
    pass). `pad=False` saves a tokenizer without a pad token, as many reward models ship."""
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    tokenizer.add_special_tokens({"additional_special_tokens": [SCORE_TOKEN]})
    if not pad:
        tokenizer.pad_token = None
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                         num_labels=num_labels, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
