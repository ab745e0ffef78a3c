"""The reward-model engine: an HF sequence classifier (one label) scoring (prompt, response) pairs. No I/O.

What the model reads. Each pair is rendered to token ids the way the reward model was trained to read it:
`chat` renders [user: prompt, assistant: response] with the tokenizer's chat template (no generation prompt; an
empty response is an empty assistant turn, scored like any other), `raw` tokenizes `prompt + response` as text.
Some reward models are read at a dedicated token appended after the conversation rather than at its last token:
Athene-RM-8B (the paper's reward model) appends `<|reserved_special_token_1|>` and its value head's output there is
the score. `score_token` names that token; without one the score is read at the rendering's last token.

Too long. An input over `max_length` keeps its last `max_length` ids: the prompt loses its left (its beginning,
the chat template's header included) first, the response stays whole, and a response longer than `max_length` on
its own keeps its end. The score token is appended before cutting, so it is always the last id. Each result says
whether its input was cut (`truncated`) and how many tokens the model read.

Why the score position is gathered here. HF's `*ForSequenceClassification.forward` pools at the rightmost token
that is not `pad_token_id`. Many reward models have no pad token and pad with `<eos>` (or `<|eot_id|>`), which the
chat template also writes at the end of every turn, so HF would read the wrong position (the last token before
the trailing `<eos>`) for every row. The engine instead right-pads with an attention mask, runs the base model,
takes each row's hidden state at its last real position (mask sum − 1) and applies the classification head to
it: the score no longer depends on which id pads, on the batch it was in, or on its neighbours' lengths (right
padding keeps the real tokens' positions 0…n−1, and causal attention never lets them see the padding).

Batching. Items are sorted by length and packed so that rows × longest row ≤ `max_batch_tokens` (one row at
least, however long), which bounds activation memory whatever the mix of lengths; results come back in input
order. A non-finite score raises: a NaN reward would silently poison the training step that uses it.

Not thread-safe: the caller (the reward service) serializes calls.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HEAD_NAMES = ("score", "classifier")
# Checkpoints whose value head is saved as `v_head` (custom reward-model classes such as Athene-RM's) load into
# the standard `score` head; without this the head would be missing and randomly initialised.
HEAD_KEY_MAPPING = {r"^v_head\.": "score."}


class RewardEngineConfig(BaseModel):
    """How the reward model is loaded and read (the reward service's flags)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: str
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_length: int = Field(default=4096, gt=0)  # tokens the model reads, the score token included
    score_token: str | None = None  # appended after the rendering; None: read the rendering's last token
    prompt_format: Literal["chat", "raw"] = "chat"
    max_batch_tokens: int = Field(default=16384, gt=0)  # rows × longest row per forward pass
    device: str | None = None  # None: cuda if available, else cpu


@dataclass(frozen=True)
class RewardScore:
    score: float
    truncated: bool  # the input was over max_length and lost its left
    tokens: int  # tokens the model read


class RewardEngine:
    """A loaded reward model; `score` maps (prompt, response) pairs to scalar rewards."""

    def __init__(self, config: RewardEngineConfig) -> None:
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        self.config = config
        model_config = AutoConfig.from_pretrained(config.model_path)
        if model_config.num_labels != 1:
            raise ValueError(f"{config.model_path} has {model_config.num_labels} labels; a reward model has one "
                             "(a scalar score)")
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(config.model_path)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            config.model_path, dtype=DTYPES[config.dtype], output_loading_info=True, key_mapping=HEAD_KEY_MAPPING,
        )
        missing_head = sorted(k for k in info.get("missing_keys", ()) if k.split(".")[0] in HEAD_NAMES)
        if missing_head:
            raise ValueError(f"{config.model_path} has no trained classification head ({', '.join(missing_head)} "
                             "missing from the checkpoint): its scores would be random")
        self.head = _head(model)
        self.model = model.to(self.device).eval().requires_grad_(False)

        if self.tokenizer.pad_token_id is None and self.tokenizer.eos_token is not None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.pad_id = int(self.tokenizer.pad_token_id) if self.tokenizer.pad_token_id is not None else 0
        self.model.config.pad_token_id = self.pad_id  # only HF's own pooling reads it; the engine never does

        if config.prompt_format == "chat" and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"{config.model_path}'s tokenizer has no chat template (use prompt_format raw)")
        self.score_token_id = self._score_token_id(config.score_token)

    def _score_token_id(self, token: str | None) -> int | None:
        if token is None:
            return None
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token not in self.tokenizer.get_vocab():
            raise ValueError(f"score token {token!r} is not in {self.config.model_path}'s tokenizer")
        embeddings = self.model.get_input_embeddings().num_embeddings
        if not 0 <= int(token_id) < embeddings:
            raise ValueError(f"score token {token!r} has id {token_id}, outside the model's {embeddings} embeddings")
        return int(token_id)

    # --- rendering ---------------------------------------------------------------------------------------

    def render(self, prompt: str, response: str) -> list[int]:
        """The full token ids of one pair, score token included, before any truncation."""
        if self.config.prompt_format == "chat":
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            rendered = self.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False,
                                                          return_dict=False)
            ids = _as_ids(rendered)
        else:
            ids = _as_ids(self.tokenizer(prompt + response))
        if not ids:  # raw, both empty, and a tokenizer that adds nothing: read one neutral token
            fallback = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.pad_id
            ids = [int(fallback)]
        if self.score_token_id is not None:
            ids.append(self.score_token_id)
        return ids

    def prepare(self, prompt: str, response: str) -> tuple[list[int], bool]:
        """The ids the model reads for one pair (the last `max_length`) and whether the rendering was cut."""
        ids = self.render(prompt, response)
        limit = self.config.max_length
        if len(ids) <= limit:
            return ids, False
        return ids[-limit:], True  # the tail: the prompt's left goes first; the score token, last, stays

    # --- scoring -----------------------------------------------------------------------------------------

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[RewardScore]:
        """Score each (prompt, response) pair; results in input order."""
        if not pairs:
            return []
        prepared = [self.prepare(prompt, response) for prompt, response in pairs]
        scores: list[float] = [0.0] * len(prepared)
        for batch in pack_by_tokens([len(ids) for ids, _ in prepared], self.config.max_batch_tokens):
            values = self._forward([prepared[i][0] for i in batch])
            for index, value in zip(batch, values, strict=True):
                if not math.isfinite(value):
                    raise FloatingPointError(f"the reward model scored item {index} as {value} (dtype "
                                             f"{self.config.dtype})")
                scores[index] = value
        return [RewardScore(score=s, truncated=cut, tokens=len(ids)) for s, (ids, cut) in zip(scores, prepared,
                                                                                              strict=True)]

    @torch.inference_mode()
    def _forward(self, rows: list[list[int]]) -> list[float]:
        """One padded forward pass; each row's score read at its last real token."""
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            input_ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[r, :len(row)] = 1
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                       use_cache=False).last_hidden_state
        last = attention_mask.sum(dim=-1) - 1
        pooled = hidden[torch.arange(len(rows), device=hidden.device), last]
        values = self.head(pooled).float().reshape(len(rows), -1)[:, 0]
        return [float(v) for v in values.cpu()]


def pack_by_tokens(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped into batches, longest first, each with rows × its longest row ≤ max_batch_tokens (or a
    single row). Sorting keeps rows of similar length together, so little of each batch is padding."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_batch_tokens:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def _head(model: Any) -> torch.nn.Module:
    """The classification head applied to one hidden state per row: `score` (Llama, Qwen, Mistral, Gemma, GPT-2
    families) or a linear `classifier`. Encoder-style heads that pool a sequence themselves are not read here."""
    head = getattr(model, "score", None)
    if head is None:
        head = getattr(model, "classifier", None)
        if head is not None and not isinstance(head, torch.nn.Linear):
            head = None
    if not isinstance(head, torch.nn.Module):
        raise ValueError(f"{type(model).__name__} has no `score` (or linear `classifier`) head to read at the last "
                         "token; the reward engine reads decoder-only sequence classifiers")
    return head


def _as_ids(rendered: Any) -> list[int]:
    """Token ids from what a tokenizer call returns: a list of ids, or a BatchEncoding / dict holding them."""
    if isinstance(rendered, Mapping) or hasattr(rendered, "input_ids"):
        rendered = rendered["input_ids"]
    if hasattr(rendered, "tolist"):
        rendered = rendered.tolist()
    ids = list(rendered)
    if ids and isinstance(ids[0], list):  # a batch of one
        ids = ids[0]
    return [int(token_id) for token_id in ids]
