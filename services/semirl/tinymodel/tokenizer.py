"""A byte-level BPE tokenizer trained on the task text; digits stay single tokens so arithmetic is learnable.

It carries a small Llama-3-like chat template, so the demo prompts the tiny model exactly as the 8B examples
prompt an Instruct model (core/chat.py): `<bos>`, then per turn
`<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<eos>`, then the generation prompt
`<|start_header_id|>assistant<|end_header_id|>\\n\\n`. `<eos>` ends a turn (Llama-3's `<|eot_id|>`), so the
model has one stop token.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
START_HEADER, END_HEADER = "<|start_header_id|>", "<|end_header_id|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, START_HEADER, END_HEADER]
ROLES = ("system", "user", "assistant")

CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '" + START_HEADER + "' + message['role'] + '" + END_HEADER + "\n\n' + message['content'] + eos_token }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '" + START_HEADER + "assistant" + END_HEADER + "\n\n' }}"
    "{%- endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train BPE on `texts` (and the role names, so each is one token); encoding adds <bos> in front (as vLLM does
    for raw prompts), never <eos>; the chat template renders its own <bos> and is tokenized without another."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(chain(texts, ROLES), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
