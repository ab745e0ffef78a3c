"""The tiny model factory: tokenizer round trip and chat template, vLLM-compatible config, a partly-right seed
prompted as the generator prompts it, idempotent build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

from semirl.core.chat import chat_token_ids
from semirl.data.synthetic import make_problems, reference_response
from semirl.tinymodel.build import TinyParams, TinySetup, build_tiny_setup
from semirl.tinymodel.sampling import boxed_answer, is_correct, left_padded
from semirl.tinymodel.sft import encode_pairs
from semirl.tinymodel.tokenizer import END_HEADER, START_HEADER, train_tokenizer

# A smaller, faster variant of the default build (same model shape, fewer checks and eval samples).
FAST = TinyParams(n_sft=3000, n_train=200, n_eval=100, n_val=50, seed_eval_problems=50, min_steps=125, max_steps=300)
SEED_BAND = (0.15, 0.70)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return build_tiny_setup(tmp_path_factory.mktemp("tiny"), seed=0, params=FAST)


def test_tokenizer_round_trips_task_text() -> None:
    rows = make_problems(300, seed=0)
    texts = [row["problem"] + reference_response(row) for row in rows]
    tokenizer = train_tokenizer(texts[:200], vocab_size=512)
    assert len(tokenizer) <= 512
    for text in texts:  # includes text the tokenizer was not trained on
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # prompt tokens + response tokens == tokens of the whole text, so SFT matches what a generator sees
    prompt, response = rows[0]["problem"], reference_response(rows[0])
    split = tokenizer(prompt)["input_ids"] + tokenizer(response, add_special_tokens=False)["input_ids"]
    assert split == tokenizer(prompt + response)["input_ids"]


def test_chat_template_renders_one_bos_and_keeps_digits() -> None:
    rows = make_problems(200, seed=0)
    tokenizer = train_tokenizer([row["problem"] + reference_response(row) for row in rows], vocab_size=512)
    prompt = "Q: 23+45=?\nA:"
    ids = chat_token_ids(tokenizer, prompt)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert tokens[1:4] == [START_HEADER, "user", END_HEADER]  # role names are one token each
    assert tokens[-5:] == [START_HEADER, "assistant", END_HEADER, "Ċ", "Ċ"]  # Ċ: byte-level newline
    assert tokens.count(tokenizer.eos_token) == 1  # it ends the user turn
    assert {"2", "3", "4", "5"} <= set(tokens)  # digits stay single tokens inside the template too
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\n\n" + prompt + "assistant\n\n"


def test_sft_trains_on_the_prompt_ids_the_generator_sends() -> None:
    rows = make_problems(50, seed=0)
    pairs = [(row["problem"], reference_response(row)) for row in rows]
    tokenizer = train_tokenizer([p + r for p, r in pairs], vocab_size=512)
    for (prompt, response), (ids, start) in zip(pairs, encode_pairs(tokenizer, pairs), strict=True):
        assert ids[:start] == chat_token_ids(tokenizer, prompt)
        assert ids[start:-1] == tokenizer(response, add_special_tokens=False)["input_ids"]
        assert ids[-1] == tokenizer.eos_token_id


def test_left_padding_ends_every_row_at_the_generation_start() -> None:
    input_ids, attention = left_padded([[5, 6, 7], [8]], pad_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert attention.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_boxed_answer_scoring() -> None:
    assert boxed_answer(" 4+9=13, 6+1+1=8. \\boxed{83}") == "83"
    assert is_correct(" x \\boxed{83}", "83") and not is_correct(" x \\boxed{81}", "83")
    assert boxed_answer(" 4+9=13, 6+1") is None


def test_saved_directory_is_a_vllm_loadable_checkpoint(setup: TinySetup) -> None:
    names = {p.name for p in setup.model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names
    config = AutoConfig.from_pretrained(setup.model_dir)
    assert config.head_dim >= 32 and config.hidden_size // config.num_attention_heads >= 32
    tokenizer = AutoTokenizer.from_pretrained(setup.model_dir)
    assert chat_token_ids(tokenizer, "Q: 1+2=?\nA:")[:2] == [tokenizer.bos_token_id,
                                                              tokenizer.convert_tokens_to_ids(START_HEADER)]
    generation = json.loads((setup.model_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.eos_token_id == config.eos_token_id
    assert config.vocab_size == len(tokenizer)


def test_seed_model_is_partly_right(setup: TinySetup) -> None:
    assert SEED_BAND[0] <= setup.seed_accuracy <= SEED_BAND[1]
    tokenizer = AutoTokenizer.from_pretrained(setup.model_dir)
    model = LlamaForCausalLM.from_pretrained(setup.model_dir).eval()
    row = json.loads(setup.eval_path.read_text().splitlines()[0])
    prompt = torch.tensor([chat_token_ids(tokenizer, row["problem"])])  # as the generator prompts a chat task
    with torch.no_grad():
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                             max_new_tokens=32)
    text = tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)
    assert out[0, -1].item() == tokenizer.eos_token_id, text    # stops by itself
    assert boxed_answer(text) is not None and boxed_answer(text).isdigit(), text


def test_data_files_are_disjoint(setup: TinySetup) -> None:
    train = [json.loads(line) for line in setup.train_path.read_text().splitlines()]
    evals = [json.loads(line) for line in setup.eval_path.read_text().splitlines()]
    assert len(train) == FAST.n_train and len(evals) == FAST.n_eval
    assert not {r["problem"] for r in train} & {r["problem"] for r in evals}


def test_build_is_idempotent(setup: TinySetup) -> None:
    stamp_before = (setup.model_dir / "model.safetensors").stat().st_mtime_ns
    again = build_tiny_setup(setup.model_dir.parent, seed=0, params=FAST)
    assert again == setup
    assert (setup.model_dir / "model.safetensors").stat().st_mtime_ns == stamp_before
    assert Path(again.train_path).is_file()


def test_a_cached_setup_loads_without_torch_or_transformers(tiny_setup) -> None:  # noqa: ANN001
    """`semirl demo` calls build_tiny_setup before it starts the stack: the cached path must not pay torch's and
    transformers' ~6 s of imports (the build itself imports them)."""
    import json
    import subprocess
    import sys

    probe = ("import json, sys; from pathlib import Path; from semirl.tinymodel.build import build_tiny_setup; "
             "setup = build_tiny_setup(Path(sys.argv[1]), seed=0); "
             "print(json.dumps({'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules, "
             "'model_dir': str(setup.model_dir)}))")
    proc = subprocess.run([sys.executable, "-c", probe, str(tiny_setup.model_dir.parent)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == {"torch": False, "transformers": False, "model_dir": str(tiny_setup.model_dir)}
