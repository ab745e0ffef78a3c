"""Prompt rendering: chat prompts become the chat template's token ids (one BOS), raw prompts stay text."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from transformers import PreTrainedTokenizerFast

from semirl.core.chat import PromptError, chat_token_ids
from semirl.core.wire import PromptFormat, prompt_format_of
from semirl.generator.engine import GenerationEngine, Prompt, Sampling, engine_prompt
from semirl.generator.messages import prompt_of
from semirl.proto import types_pb2
from semirl.tinymodel.tokenizer import train_tokenizer

TEXT = "Q: 23+45=?\nA:"


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer([TEXT + " 3+5=8, 2+4+0=6. \\boxed{68}"] * 20, vocab_size=300)


@pytest.fixture
def plain_tokenizer() -> PreTrainedTokenizerFast:
    plain = train_tokenizer([TEXT] * 20, vocab_size=300)
    plain.chat_template = None
    return plain


def user_turn(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                         tokenize=True, return_dict=False)


def test_chat_prompt_is_the_user_turn_with_the_generation_prompt(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = chat_token_ids(tokenizer, TEXT)
    assert ids == user_turn(tokenizer, TEXT)
    text = tokenizer.decode(ids)
    assert text.startswith("<bos><|start_header_id|>user<|end_header_id|>\n\n" + TEXT)
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_chat_prompt_has_exactly_one_bos(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = chat_token_ids(tokenizer, TEXT)
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    # The trap this avoids: the template renders <bos> as text, and tokenizing that text adds another.
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": TEXT}], add_generation_prompt=True,
                                             tokenize=False)
    assert tokenizer(rendered)["input_ids"][:2] == [tokenizer.bos_token_id] * 2


def test_engine_prompt_sends_chat_as_token_ids_and_raw_as_text(tokenizer: PreTrainedTokenizerFast) -> None:
    assert engine_prompt(tokenizer, Prompt(TEXT, PromptFormat.CHAT)) == {"prompt_token_ids": user_turn(tokenizer, TEXT)}
    assert engine_prompt(tokenizer, Prompt(TEXT, PromptFormat.RAW)) == {"prompt": TEXT}
    assert engine_prompt(tokenizer, Prompt(TEXT)) == {"prompt": TEXT}


def test_chat_prompt_without_a_template_is_a_prompt_error(plain_tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(PromptError, match="no chat template.*prompt_format: raw"):
        chat_token_ids(plain_tokenizer, TEXT)
    assert engine_prompt(plain_tokenizer, Prompt(TEXT, PromptFormat.RAW)) == {"prompt": TEXT}


def test_a_template_that_refuses_the_conversation_is_a_prompt_error(plain_tokenizer: PreTrainedTokenizerFast) -> None:
    plain_tokenizer.chat_template = "{{ raise_exception('only system turns') }}"
    with pytest.raises(PromptError, match="only system turns"):
        chat_token_ids(plain_tokenizer, TEXT)


def test_task_prompt_format_unspecified_means_raw() -> None:
    assert prompt_format_of(types_pb2.PromptTask(prompt_format=types_pb2.PROMPT_FORMAT_UNSPECIFIED)) is PromptFormat.RAW
    assert prompt_format_of(types_pb2.PromptTask(prompt_format=types_pb2.PROMPT_FORMAT_RAW)) is PromptFormat.RAW
    assert prompt_format_of(types_pb2.PromptTask(prompt_format=types_pb2.PROMPT_FORMAT_CHAT)) is PromptFormat.CHAT
    task = types_pb2.PromptTask(prompt=TEXT, prompt_format=types_pb2.PROMPT_FORMAT_CHAT)
    assert prompt_of(task) == Prompt(TEXT, PromptFormat.CHAT)


class FakeLLM:
    """Records what `generate` is given and echoes token prompts back, as vLLM does."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast) -> None:
        self.tokenizer = tokenizer
        self.calls: list[list[dict[str, Any]]] = []

    def get_tokenizer(self) -> PreTrainedTokenizerFast:
        return self.tokenizer

    def generate(self, inputs: list[dict[str, Any]], params: list[Any], use_tqdm: bool) -> list[SimpleNamespace]:
        self.calls.append(inputs)
        return [SimpleNamespace(prompt_token_ids=i.get("prompt_token_ids") or self.tokenizer(i["prompt"])["input_ids"],
                                outputs=[]) for i in inputs]


def engine_with(llm: FakeLLM) -> GenerationEngine:
    engine = GenerationEngine()
    engine.llm = llm
    return engine


def test_one_generate_call_serves_chat_and_raw_prompts_together(tokenizer: PreTrainedTokenizerFast) -> None:
    llm = FakeLLM(tokenizer)
    results = engine_with(llm).generate([Prompt(TEXT, PromptFormat.CHAT), Prompt(TEXT, PromptFormat.RAW)],
                                        Sampling(n=1))
    assert llm.calls == [[{"prompt_token_ids": user_turn(tokenizer, TEXT)}, {"prompt": TEXT}]]
    assert [ids for ids, _ in results] == [user_turn(tokenizer, TEXT), tokenizer(TEXT)["input_ids"]]


def test_a_chat_prompt_the_model_cannot_render_fails_before_vllm(plain_tokenizer: PreTrainedTokenizerFast) -> None:
    llm = FakeLLM(plain_tokenizer)
    with pytest.raises(PromptError):
        engine_with(llm).generate([Prompt(TEXT, PromptFormat.RAW), Prompt(TEXT, PromptFormat.CHAT)], Sampling())
    assert llm.calls == []
