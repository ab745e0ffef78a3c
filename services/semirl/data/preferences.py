"""Static preference datasets for offline DPO (docs/architecture.md, "offline DPO from a static dataset").

A row is a JSON object with a prompt, a chosen and a rejected response — the shapes of common HF preference sets:
- `prompt` text, `chosen` / `rejected` text (e.g. argilla, trl-lib's "standard" format);
- `chosen` / `rejected` as conversations (lists of {role, content}) ending with the assistant's turn, the prompt
  either given as `prompt` or, when missing, the conversation before that turn (UltraFeedback binarized,
  Anthropic HH as converted by TRL). A prompt may also be a conversation.

`read_preferences` is the one validator: the controller runs it at submission (a bad row is a 422 naming the row
and the field) and the trainer reads the same rows with it. `preference_group` turns a row into the ScoredGroup a
trainer step consumes: two samples, the chosen one scored 1 and the rejected one 0, so DPO's pair rule forms
exactly that pair and everything downstream of the intake is the same as for generated groups.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semirl.proto import types_pb2
from semirl.spec import DatasetSpec

Message = dict[str, str]


@dataclass(frozen=True)
class Preference:
    prompt: tuple[tuple[str, str], ...]  # the conversation up to the response: (role, content) turns
    chosen: str
    rejected: str

    def messages(self) -> list[Message]:
        return [{"role": role, "content": content} for role, content in self.prompt]


class PreferenceRowError(ValueError):
    """A row that cannot be trained on; the message names the file, the row (1-based) and the field."""


def _conversation(value: Any, where: str) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise PreferenceRowError(f"{where} must be text or a non-empty list of {{role, content}} messages")
    turns = []
    for index, turn in enumerate(value):
        if (not isinstance(turn, dict) or not isinstance(turn.get("role"), str)
                or not isinstance(turn.get("content"), str)):
            raise PreferenceRowError(f"{where}[{index}] must be a {{role, content}} message with text content")
        turns.append({"role": turn["role"], "content": turn["content"]})
    return turns


def _response(value: Any, where: str) -> tuple[list[Message], str]:
    """(the turns before the response, the response text) of a chosen or rejected field."""
    if isinstance(value, str):
        return [], value
    turns = _conversation(value, where)
    if turns[-1]["role"] != "assistant":
        raise PreferenceRowError(f"{where} must end with the assistant's turn")
    return turns[:-1], turns[-1]["content"]


def parse_preference(row: Any, dataset: DatasetSpec) -> Preference:
    if not isinstance(row, dict):
        raise PreferenceRowError("a row must be a JSON object")
    for name in (dataset.chosen_field, dataset.rejected_field):
        if name not in row:
            raise PreferenceRowError(f"missing field {name!r}")
    before, chosen = _response(row[dataset.chosen_field], repr(dataset.chosen_field))
    rejected_before, rejected = _response(row[dataset.rejected_field], repr(dataset.rejected_field))
    prompt = row.get(dataset.prompt_field)
    if prompt is None:
        if not before:
            raise PreferenceRowError(f"missing field {dataset.prompt_field!r} (needed when "
                                     f"{dataset.chosen_field!r} is not a conversation with the prompt in it)")
        if rejected_before and rejected_before != before:
            raise PreferenceRowError(f"{dataset.chosen_field!r} and {dataset.rejected_field!r} continue different "
                                     "conversations")
        turns = before
    elif isinstance(prompt, str):
        turns = [{"role": "user", "content": prompt}]
    else:
        turns = _conversation(prompt, repr(dataset.prompt_field))
    if not chosen or not rejected:
        raise PreferenceRowError(f"{dataset.chosen_field!r} and {dataset.rejected_field!r} must not be empty")
    return Preference(tuple((t["role"], t["content"]) for t in turns), chosen, rejected)


def read_preferences(dataset: DatasetSpec) -> list[Preference]:
    """Every row of `dataset.path` (up to `limit`), or PreferenceRowError naming the first bad row and field."""
    rows: list[Preference] = []
    with Path(dataset.path).open() as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(parse_preference(json.loads(line), dataset))
            except (json.JSONDecodeError, RecursionError) as err:
                raise PreferenceRowError(f"{dataset.path}: row {line_no}: not valid JSON ({err})") from err
            except PreferenceRowError as err:
                raise PreferenceRowError(f"{dataset.path}: row {line_no}: {err}") from err
            if dataset.limit and len(rows) >= dataset.limit:
                break
    if not rows:
        raise PreferenceRowError(f"{dataset.path}: no rows")
    return rows


def preference_group(preference: Preference, tokenizer: Any, *, prompt_id: str, chat: bool,
                     max_model_len: int) -> types_pb2.ScoredGroup:
    """The row as a scored group of two samples (chosen: reward 1, rejected: 0), tokenized as the generator and
    the tiny model's SFT do: the prompt rendered by the chat template (or the raw text), each response's tokens
    plus EOS. Responses are cut to fit `max_model_len`; a prompt that fills it leaves empty samples (skipped)."""
    from semirl.core.chat import chat_token_ids

    if chat:
        prompt_ids = chat_token_ids(tokenizer, preference.messages())
    else:
        text = "\n\n".join(content for _role, content in preference.prompt)
        prompt_ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    room = max(0, max_model_len - len(prompt_ids))

    def sample(text: str) -> types_pb2.Sample:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [int(tokenizer.eos_token_id)]
        return types_pb2.Sample(text=text, token_ids=ids[:room], finish_reason="stop" if len(ids) <= room else "length")

    task = types_pb2.PromptTask(prompt_id=prompt_id, purpose=types_pb2.TASK_PURPOSE_TRAIN,
                                reward_source=types_pb2.REWARD_SOURCE_VERIFIER)
    group = types_pb2.SampleGroup(task=task, prompt_token_ids=prompt_ids,
                                  samples=[sample(preference.chosen), sample(preference.rejected)])
    return types_pb2.ScoredGroup(group=group, rewards=[1.0, 0.0], scorer_id="preference-dataset")
