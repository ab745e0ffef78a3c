"""Chat-template rendering, shared by the generator, the datasets and the tiny model: one way to turn a prompt into
the token ids of the model's chat template.

The text is the user turn (or a whole conversation of {role, content} messages), generation prompt on, rendered
straight to token ids. Nothing is added to those ids, so a template that starts with BOS yields exactly one:
rendering the template to text and letting vLLM tokenize that text would add a second BOS in front.
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError


class PromptError(ValueError):
    """A prompt that can never be served (no chat template, one that cannot render it, longer than the context)."""


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
