"""The reward-model engine on a tiny random Llama sequence classifier: its scores are HF's own forward pass on the
same single input, whatever the batching, padding, pad id or truncation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reward_fixtures import SCORE_TOKEN, build_model_dir  # tests/reward_fixtures.py
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, LlamaForSequenceClassification

from semirl.reward.engine import RewardEngine, RewardEngineConfig, pack_by_tokens

PAIRS = [
    ("What is 12+30?", "The answer is \\boxed{42}."),
    ("What is 1+1?", "2"),
    ("Add these numbers carefully, column by column: 123+456+789?", "3+6+9=18, 2+5+8+1=16, 1+4+7+1=13. \\boxed{1368}"),
    ("hello", "world"),
    ("What is 5+5?", "Let me add the columns: 5+5=10. The answer is \\boxed{10}."),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("rm"))


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> RewardEngine:
    return RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu"))


@pytest.fixture(scope="module")
def scored_engine(model_dir: Path) -> RewardEngine:
    return RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu", score_token=SCORE_TOKEN))


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> LlamaForSequenceClassification:
    return LlamaForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()


def chat_ids(model_dir: Path, prompt: str, response: str) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return list(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False,
                                              return_dict=False))


@torch.no_grad()
def direct_score(model: LlamaForSequenceClassification, ids: list[int]) -> float:
    """HF's own forward on one unpadded row: its pooling reads the last token."""
    return float(model(input_ids=torch.tensor([ids])).logits[0, -1])


def assert_scores_close(got: list[float], want: list[float]) -> None:
    assert got == pytest.approx(want, abs=1e-5, rel=0)


# --- 1. the engine's score is HF's forward on the same input ----------------------------------------------


def test_score_is_the_direct_forward_at_the_last_token(engine: RewardEngine, model_dir: Path,
                                                       reference: LlamaForSequenceClassification) -> None:
    results = engine.score(PAIRS)
    for (prompt, response), result in zip(PAIRS, results, strict=True):
        ids = chat_ids(model_dir, prompt, response)
        assert engine.prepare(prompt, response) == (ids, False)
        assert result.tokens == len(ids) and not result.truncated
        assert isinstance(result.score, float)
        assert result.score == pytest.approx(direct_score(reference, ids), abs=1e-5, rel=0)
    assert len({round(r.score, 3) for r in results}) == len(PAIRS)  # the scores differ: the comparisons mean something


def test_score_token_is_appended_and_read(scored_engine: RewardEngine, engine: RewardEngine, model_dir: Path,
                                          reference: LlamaForSequenceClassification) -> None:
    score_id = AutoTokenizer.from_pretrained(model_dir).convert_tokens_to_ids(SCORE_TOKEN)
    results = scored_engine.score(PAIRS)
    plain = engine.score(PAIRS)
    for (prompt, response), result, without in zip(PAIRS, results, plain, strict=True):
        ids = chat_ids(model_dir, prompt, response) + [score_id]
        assert scored_engine.prepare(prompt, response) == (ids, False)
        assert ids[-1] == score_id and result.tokens == len(ids)
        assert result.score == pytest.approx(direct_score(reference, ids), abs=1e-5, rel=0)
        assert result.score != pytest.approx(without.score, abs=1e-4)  # read at the score token, not before it


def test_raw_format_tokenizes_prompt_plus_response(model_dir: Path, reference: LlamaForSequenceClassification) -> None:
    raw = RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu", prompt_format="raw"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for (prompt, response), result in zip(PAIRS, raw.score(PAIRS), strict=True):
        ids = tokenizer(prompt + response)["input_ids"]
        assert raw.prepare(prompt, response) == (ids, False)
        assert result.score == pytest.approx(direct_score(reference, ids), abs=1e-5, rel=0)


def test_pad_is_eos_still_reads_the_last_real_token(tmp_path: Path) -> None:
    """No pad token: the engine pads with <eos>, which the chat template also writes at the end of each turn, so
    HF's pooling (rightmost non-pad token) would read the wrong position; the engine's explicit gather does not."""
    model_dir = build_model_dir(tmp_path / "rm", pad=False)
    engine = RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu"))
    eos = engine.tokenizer.eos_token_id
    assert engine.pad_id == eos and engine.model.config.pad_token_id == eos
    reference = LlamaForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    reference.config.pad_token_id = None  # one unpadded row: HF reads its last token
    results = engine.score(PAIRS)
    for (prompt, response), result in zip(PAIRS, results, strict=True):
        ids = chat_ids(model_dir, prompt, response)
        assert ids[-1] == eos
        assert result.score == pytest.approx(direct_score(reference, ids), abs=1e-5, rel=0)
    with torch.no_grad():  # what HF's own pooling would have read at a batch: not the last token
        reference.config.pad_token_id = eos
        misread = float(reference(input_ids=torch.tensor([chat_ids(model_dir, *PAIRS[0])])).logits[0, 0])
    assert misread != pytest.approx(results[0].score, abs=1e-4)


# --- 2. batching and padding do not change scores ------------------------------------------------------


@pytest.mark.parametrize("use_score_token", [False, True])
def test_batching_does_not_change_scores(model_dir: Path, use_score_token: bool) -> None:
    token = SCORE_TOKEN if use_score_token else None
    engine = RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu", score_token=token))
    alone = [engine.score([pair])[0].score for pair in PAIRS]
    together = engine.score(PAIRS)
    assert_scores_close([r.score for r in together], alone)
    reversed_scores = [r.score for r in engine.score(PAIRS[::-1])]
    assert_scores_close(reversed_scores, alone[::-1])  # order preserved whatever the input order
    lengths = [r.tokens for r in together]
    assert len(set(lengths)) > 1  # mixed lengths, so rows really are padded
    small = RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu", score_token=token,
                                            max_batch_tokens=2 * max(lengths)))
    assert len(pack_by_tokens(lengths, 2 * max(lengths))) > 1  # several batches
    assert_scores_close([r.score for r in small.score(PAIRS)], alone)
    one_each = RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu", score_token=token,
                                               max_batch_tokens=1))
    assert_scores_close([r.score for r in one_each.score(PAIRS * 2)], alone * 2)


def test_pack_by_tokens_bounds_every_batch() -> None:
    lengths = [5, 40, 12, 12, 3, 100, 7, 40, 1]
    for budget in (1, 50, 100, 120, 1000):
        batches = pack_by_tokens(lengths, budget)
        assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
        for batch in batches:
            assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= budget
    assert pack_by_tokens(lengths, 1000) == [sorted(range(len(lengths)), key=lambda i: -lengths[i])]
    assert pack_by_tokens([], 10) == []


# --- 3. over-long inputs lose the prompt's left ---------------------------------------------------------


def test_truncation_keeps_the_tail_and_the_score_token(scored_engine: RewardEngine, model_dir: Path,
                                                       reference: LlamaForSequenceClassification) -> None:
    limit = 24
    engine = RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu", score_token=SCORE_TOKEN,
                                             max_length=limit))
    score_id = engine.score_token_id
    long_pair = PAIRS[2]
    full = scored_engine.render(*long_pair)
    assert len(full) > limit
    kept, cut = engine.prepare(*long_pair)
    assert cut and kept == full[-limit:] and kept[-1] == score_id
    short_pair = ("1", "")
    short_full = scored_engine.render(*short_pair)
    assert len(short_full) <= limit
    long_result, short_result = engine.score([long_pair, short_pair])
    assert long_result.truncated and long_result.tokens == limit
    assert long_result.score == pytest.approx(direct_score(reference, kept), abs=1e-5, rel=0)
    assert not short_result.truncated and short_result.tokens == len(short_full)
    assert short_result.score == pytest.approx(direct_score(reference, short_full), abs=1e-5, rel=0)
    tiny = RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu", score_token=SCORE_TOKEN,
                                           max_length=1))
    only = tiny.score([long_pair])[0]
    assert only.truncated and only.tokens == 1 and tiny.prepare(*long_pair)[0] == [score_id]


def test_truncation_without_score_token_keeps_the_response_end(model_dir: Path) -> None:
    engine = RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu", max_length=6))
    full = engine.render(*PAIRS[2])
    kept, cut = engine.prepare(*PAIRS[2])
    assert cut and kept == full[-6:]
    assert engine.score([PAIRS[2]])[0].tokens == 6


# --- 4. edge cases and configuration errors -------------------------------------------------------------


def test_empty_response_and_empty_list(engine: RewardEngine, scored_engine: RewardEngine, model_dir: Path) -> None:
    assert engine.score([]) == []
    for eng in (engine, scored_engine):
        results = eng.score([("What is 1+1?", ""), ("", ""), ("What is 1+1?", "2")])
        assert len(results) == 3
        assert all(isinstance(r.score, float) and r.tokens > 0 and not r.truncated for r in results)
    raw = RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu", prompt_format="raw"))
    assert raw.score([("", "")])[0].tokens >= 1


def test_two_labels_is_rejected(tmp_path: Path) -> None:
    model_dir = build_model_dir(tmp_path / "rm2", num_labels=2)
    with pytest.raises(ValueError, match="2 labels"):
        RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu"))


def test_unknown_score_token_is_rejected(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="score token"):
        RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu", score_token="<|not_a_token|>"))


def test_missing_head_is_rejected_and_a_v_head_is_loaded_as_score(tmp_path: Path) -> None:
    model_dir = build_model_dir(tmp_path / "vhead")
    original = [r.score for r in RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu")).score(PAIRS)]
    weights = load_file(model_dir / "model.safetensors")
    weights["v_head.weight"] = weights.pop("score.weight")
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    renamed = RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu"))
    assert_scores_close([r.score for r in renamed.score(PAIRS)], original)
    del weights["v_head.weight"]
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="no trained classification head"):
        RewardEngine(RewardEngineConfig(model_path=str(model_dir), device="cpu"))


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        RewardEngineConfig(model_path="x", max_length=0)
    with pytest.raises(ValueError):
        RewardEngineConfig(model_path="x", dtype="int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RewardEngineConfig(model_path="x", max_batch_tokens=0)
