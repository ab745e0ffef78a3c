"""Static preference datasets: the row shapes of common HF preference sets, errors naming the row and field, and
the scored group a row becomes (tokenized like the generator's samples)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from semirl.data.preferences import PreferenceRowError, parse_preference, preference_group, read_preferences
from semirl.data.synthetic import evaluate, expression_of, preference_rows
from semirl.spec import DatasetSpec, parse_run_spec
from semirl.trainer.pairs import select_pair

CONVERSATION = {  # UltraFeedback binarized: the prompt is also the conversation before each response
    "prompt": "What is 2+2?",
    "chosen": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
    "rejected": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "5"}],
}
HH = {  # no prompt field: the conversation before the last assistant turn is the prompt
    "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}],
}


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_setup):  # noqa: ANN001, ANN201
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_setup.model_dir)


def _write(tmp_path: Path, rows: list[object]) -> DatasetSpec:
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return DatasetSpec(path=str(path), format="preferences")


def test_text_and_conversation_rows_are_read(tmp_path: Path) -> None:
    rows = read_preferences(_write(tmp_path, [{"prompt": "p", "chosen": "a", "rejected": "b"}, CONVERSATION, HH]))
    assert [(r.messages(), r.chosen, r.rejected) for r in rows] == [
        ([{"role": "user", "content": "p"}], "a", "b"),
        ([{"role": "user", "content": "What is 2+2?"}], "4", "5"),
        ([{"role": "user", "content": "Hi"}], "Hello! How can I help?", "Go away."),
    ]


@pytest.mark.parametrize(("bad", "message"), [
    ({"prompt": "p", "rejected": "b"}, "row 2: missing field 'chosen'"),
    ({"prompt": "p", "chosen": "a"}, "row 2: missing field 'rejected'"),
    ({"chosen": "a", "rejected": "b"}, "row 2: missing field 'prompt'"),
    ({"prompt": "p", "chosen": "a", "rejected": ""}, "row 2: 'chosen' and 'rejected' must not be empty"),
    ({"prompt": "p", "chosen": [{"role": "user", "content": "x"}], "rejected": "b"}, "row 2: 'chosen' must end "
     "with the assistant's turn"),
    ({"prompt": "p", "chosen": {"nested": 1}, "rejected": "b"}, "row 2: 'chosen' must be text or a non-empty list"),
    ({"prompt": 7, "chosen": "a", "rejected": "b"}, "row 2: 'prompt' must be text or a non-empty list"),
    (["not", "an", "object"], "row 2: a row must be a JSON object"),
])
def test_a_bad_row_is_an_error_naming_the_row_and_field(tmp_path: Path, bad: object, message: str) -> None:
    dataset = _write(tmp_path, [{"prompt": "p", "chosen": "a", "rejected": "b"}, bad])
    with pytest.raises(PreferenceRowError, match=message):
        read_preferences(dataset)


def _spec(dataset: DatasetSpec, **overrides: object) -> dict:
    return {"name": "static", "algorithm": "dpo", "model": {"path": "m"},
            "data": {"train": {"path": dataset.path, "format": "preferences"}},
            "sync": {"interval": "offline"}, "train": {"steps": 2}, **overrides}


@pytest.mark.parametrize(("overrides", "loc"), [
    ({"algorithm": "grpo"}, ("algorithm",)),
    ({"sync": {"interval": 4}}, ("sync", "interval")),
])
def test_a_preference_set_is_offline_dpo(tmp_path: Path, overrides: dict, loc: tuple) -> None:
    dataset = _write(tmp_path, [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    with pytest.raises(ValidationError) as info:
        parse_run_spec(_spec(dataset, **overrides))
    assert {tuple(e["loc"]) for e in info.value.errors()} == {loc}
    with pytest.raises(ValidationError) as info:
        parse_run_spec({**_spec(dataset), "data": {"train": {"path": "t.jsonl"},
                                                   "eval": {"path": dataset.path, "format": "preferences"}}})
    assert {tuple(e["loc"]) for e in info.value.errors()} == {("data", "eval", "0", "format")}


def test_a_row_becomes_a_two_sample_group_that_pairs_chosen_over_rejected(tiny_tokenizer) -> None:  # noqa: ANN001
    (row,) = preference_rows([{"problem": "Q: 55+28=?\nA:", "answer": "83"}])
    assert "boxed{83}" in row["chosen"] and "boxed{73}" in row["rejected"]
    assert evaluate(expression_of(row["prompt"])) == 83
    dataset_row = parse_preference(row, DatasetSpec(path="x", format="preferences"))
    group = preference_group(dataset_row, tiny_tokenizer, prompt_id="t1-0", chat=True, max_model_len=256)
    chosen, rejected = group.group.samples
    assert list(group.rewards) == [1.0, 0.0]
    assert chosen.token_ids[-1] == tiny_tokenizer.eos_token_id and rejected.token_ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(chosen.token_ids[:-1]).strip() == row["chosen"].strip()
    pair, reason = select_pair(group, seed=0)
    assert reason == "" and pair is not None
    assert (pair.chosen_token_ids, pair.rejected_token_ids) == (tuple(chosen.token_ids), tuple(rejected.token_ids))
    # Cut to the context: the responses lose their ends, a prompt that fills it leaves nothing to train.
    short = preference_group(dataset_row, tiny_tokenizer, prompt_id="t1-0", chat=True,
                             max_model_len=len(group.group.prompt_token_ids) + 3)
    assert [len(s.token_ids) for s in short.group.samples] == [3, 3]
    assert short.group.samples[0].finish_reason == "length"
    none = preference_group(dataset_row, tiny_tokenizer, prompt_id="t1-0", chat=True, max_model_len=2)
    assert select_pair(none, seed=0) == (None, "too_few_samples")
