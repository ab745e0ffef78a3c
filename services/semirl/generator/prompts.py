"""How a task's prompt text becomes what vLLM is given. Knows nothing of gRPC or Redis.

- CHAT: the text is the user turn of the model tokenizer's chat template, generation prompt on (the paper's
  prompting of an Instruct model), rendered straight to token ids and given to vLLM as a token prompt. Nothing is
  added to those ids, so a template that starts with BOS yields exactly one: rendering the template to text and
  letting vLLM tokenize that text would add a second BOS in front.
- RAW: the text as it is; vLLM tokenizes it (adding BOS as the tokenizer does).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateError

if TYPE_CHECKING:
    from vllm.inputs import TextPrompt, TokensPrompt


class PromptError(ValueError):
    """A prompt the engine can never serve (e.g. longer than the context): the task should be dropped."""


class PromptFormat(StrEnum):
    CHAT = "chat"
    RAW = "raw"


@dataclass(frozen=True)
class Prompt:
    text: str
    format: PromptFormat = PromptFormat.RAW


def chat_token_ids(tokenizer: Any, text: str | list[dict[str, str]]) -> list[int]:
    """The token ids of `text` as the user turn of `tokenizer`'s chat template, generation prompt on (or of a whole
    conversation of {role, content} messages, e.g. a preference dataset's multi-turn prompt)."""
    if not getattr(tokenizer, "chat_template", None):
        raise PromptError("the model's tokenizer has no chat template; a chat prompt needs one "
                          "(set data.prompt_format: raw for a base model)")
    try:
        messages = [{"role": "user", "content": text}] if isinstance(text, str) else text
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    except (TemplateError, ValueError, TypeError) as err:
        raise PromptError(f"the chat template cannot render this prompt: {err}") from err
    return [int(token_id) for token_id in ids]


def engine_prompt(tokenizer: Any, prompt: Prompt) -> TextPrompt | TokensPrompt:
    """What vLLM's `LLM.generate` is given for `prompt` (raises PromptError when it cannot be rendered)."""
    if prompt.format is PromptFormat.CHAT:
        return {"prompt_token_ids": chat_token_ids(tokenizer, prompt.text)}
    return {"prompt": prompt.text}
