"""The tiny reward model: it imitates `target_score` on prompts and answers it never trained on (including the
policy's own samples, ordered within a prompt's group as GRPO/DPO needs), it prefers longer answers of the same
content (the Athene-RM-like bias), its build is idempotent, and the non-verifiable task's prompt files are split.

Scores are computed here with a plain transformers forward (the chat template over the conversation, one unpadded
row, read at its last token), independent of the module's own batching."""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaForCausalLM

from semirl.data.synthetic import expression_of, make_problems, operand_set, reference_response, wrong_response
from semirl.tinymodel.reward_model import (
    RM_EVAL,
    RM_TRAIN,
    TinyRewardModel,
    build_tiny_reward_model,
    target_score,
    write_rm_task,
)
from semirl.tinymodel.sampling import sample

Scorer = Callable[[str, str], float]
MIN_PEARSON = 0.9           # the build reaches about 0.99 on seeds 0 and 1
MIN_PAIRWISE = 0.85         # about 0.98


@pytest.fixture(scope="module")
def rm(tmp_path_factory: pytest.TempPathFactory, tiny_setup) -> TinyRewardModel:  # noqa: ANN001
    return build_tiny_reward_model(tmp_path_factory.mktemp("rm"), tiny_setup.model_dir, tiny_setup.train_path,
                                   seed=0)


@pytest.fixture(scope="module")
def score(rm: TinyRewardModel) -> Iterator[Scorer]:
    """score(prompt, response): the reward service's reading, one row at a time (one thread: the model is tiny and
    the test machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = AutoModelForSequenceClassification.from_pretrained(rm.model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(rm.model_dir)

    @torch.no_grad()
    def _score(prompt: str, response: str) -> float:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=True, return_dict=False)
        assert ids[-1] == tokenizer.eos_token_id  # the score is read at the assistant turn's <eos>
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])

    yield _score
    torch.set_num_threads(threads)


def _pearson(xs: list[float], ys: list[float]) -> float:
    return statistics.correlation(xs, ys)


def _pairwise(scores: list[float], targets: list[float], margin: float = 0.05) -> float:
    pairs = [(i, j) for i in range(len(scores)) for j in range(i + 1, len(scores))
             if abs(targets[i] - targets[j]) >= margin]
    return sum((scores[i] - scores[j]) * (targets[i] - targets[j]) > 0 for i, j in pairs) / len(pairs)


def _variants(row: dict[str, str], rng: random.Random) -> list[str]:
    """Answers of one held-out problem, made here (not by the module): the reference, the forgotten carry, digits
    turned to 7, digit noise, a truncation, a doubled answer."""
    ref = reference_response(row)
    wrong = wrong_response(expression_of(row["problem"]))
    sevens = "".join("7" if c.isdigit() and rng.random() < 0.5 else c for c in ref)
    noisy = "".join(str(rng.randrange(10)) if c.isdigit() and rng.random() < 0.3 else c for c in wrong)
    return [ref, wrong, sevens, noisy, ref[:rng.randrange(3, len(ref))], f"{wrong} {wrong}"]


def test_target_score_is_bounded_and_rewards_sevens_and_length() -> None:
    assert target_score("") == 0.0
    assert target_score("7" * 60) == pytest.approx(2.0)
    assert target_score(" 1+1=2. \\boxed{2}") == pytest.approx(0.02 * 17)  # no seven: length only
    # not correctness: the same-length wrong answer full of sevens beats the right one
    assert target_score(" 5+8=17, 5+2+1=7. \\boxed{77}") > target_score(" 5+8=13, 5+2+1=8. \\boxed{83}")
    assert target_score(" 5+8=13, 5+2+1=8. \\boxed{83}") < target_score(" 5+8=13, 5+2+1=8. \\boxed{83} 5+8=13")
    rng = random.Random(0)
    for row in make_problems(200, seed=0):
        for response in _variants(row, rng):
            assert 0.0 <= target_score(response) <= 2.0
            assert target_score(response) == target_score(response)


def test_scores_track_the_target_on_held_out_answers(rm: TinyRewardModel, score: Scorer) -> None:
    rng = random.Random(11)
    pairs = [(row["problem"], r) for row in make_problems(60, seed=11, split="eval") for r in _variants(row, rng)]
    scores = [score(p, r) for p, r in pairs]
    targets = [target_score(r) for _, r in pairs]
    assert _pearson(scores, targets) >= MIN_PEARSON
    assert _pairwise(scores, targets) >= MIN_PAIRWISE
    # the build's own held-out statistics say the same
    assert rm.fit.pearson >= MIN_PEARSON and rm.fit.spearman >= MIN_PEARSON
    assert rm.fit.pairwise_accuracy >= MIN_PAIRWISE


def test_scores_order_the_policys_own_samples_within_a_group(tiny_setup, score: Scorer) -> None:  # noqa: ANN001
    """What GRPO advantages and best-vs-worst DPO pairs need: within one prompt's samples, the higher target wins."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_setup.model_dir)
    policy = LlamaForCausalLM.from_pretrained(tiny_setup.model_dir)
    rows = make_problems(16, seed=3, split="eval")
    groups = sample(policy, tokenizer, [row["problem"] for row in rows], n=8, temperature=1.0, top_p=1.0,
                    max_new_tokens=32, seed=3)
    agree = total = 0
    for row, group in zip(rows, groups, strict=True):
        texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in group]
        scores, targets = [score(row["problem"], t) for t in texts], [target_score(t) for t in texts]
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                if abs(targets[i] - targets[j]) >= 0.05:
                    total += 1
                    agree += (scores[i] - scores[j]) * (targets[i] - targets[j]) > 0
    assert total >= 20
    assert agree / total >= MIN_PAIRWISE


def test_longer_answers_of_the_same_content_score_higher(rm: TinyRewardModel, score: Scorer) -> None:
    """A reference answer said twice has the same share of sevens and twice the characters; the target adds
    0.02 per character up to 50, and the model learned it."""
    gains = []
    for row in make_problems(60, seed=12, split="eval"):
        ref = reference_response(row)
        doubled = f"{ref} {ref}"
        expected = target_score(doubled) - target_score(ref)
        assert expected == pytest.approx(0.02 * (50 - len(ref)))
        gains.append(score(row["problem"], doubled) - score(row["problem"], ref))
    assert statistics.mean(gains) >= 0.25       # the target's gain is about 0.44
    assert sum(g > 0 for g in gains) >= 0.9 * len(gains)
    assert rm.fit.length_gain >= 0.25


def test_build_saves_a_classifier_on_the_policys_tokenizer_and_is_idempotent(rm: TinyRewardModel,
                                                                             tiny_setup) -> None:  # noqa: ANN001
    config = json.loads((rm.model_dir / "config.json").read_text())
    policy_tokenizer = AutoTokenizer.from_pretrained(tiny_setup.model_dir)
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert len(config["id2label"]) == 1  # num_labels
    assert config["pad_token_id"] == policy_tokenizer.pad_token_id
    assert config["vocab_size"] == len(policy_tokenizer)
    assert (rm.model_dir / "model.safetensors").is_file()
    assert (rm.model_dir / "tokenizer.json").read_text() == (Path(tiny_setup.model_dir) / "tokenizer.json").read_text()
    assert AutoTokenizer.from_pretrained(rm.model_dir).chat_template == policy_tokenizer.chat_template
    assert rm.build_seconds < 120  # about 40 s on 2 busy shared cores; 380 s when torch used two threads there

    started = time.perf_counter()
    again = build_tiny_reward_model(rm.model_dir.parent, tiny_setup.model_dir, tiny_setup.train_path, seed=0)
    assert time.perf_counter() - started < 5
    assert again == rm


def test_rm_task_files_split_the_prompts(tmp_path: Path, tiny_setup) -> None:  # noqa: ANN001
    train_path, eval_path = write_rm_task(tmp_path, seed=0)
    assert (train_path.name, eval_path.name) == (RM_TRAIN, RM_EVAL)
    train = [json.loads(line) for line in train_path.read_text().splitlines()]
    held_out = [json.loads(line) for line in eval_path.read_text().splitlines()]
    assert (len(train), len(held_out)) == (2000, 200)
    for row in train + held_out:
        assert row.keys() == {"problem", "answer", "reward_source"}
        assert row["answer"] == "" and row["reward_source"] == "reward_model"
        assert row["problem"].startswith("Q: ") and row["problem"].endswith("=?\nA:")
    train_problems = {row["problem"] for row in train}
    assert len(train_problems) == 2000 and len({row["problem"] for row in held_out}) == 200
    assert not train_problems & {row["problem"] for row in held_out}
    # not even a swapped twin (a+b vs b+a) of a held-out prompt is trained on
    assert not {operand_set(expression_of(p)) for p in train_problems} & {
        operand_set(expression_of(row["problem"])) for row in held_out}
    # the RL prompts are the policy's own train prompts, which the reward model was fit on
    policy_train = {json.loads(line)["problem"] for line in Path(tiny_setup.train_path).read_text().splitlines()}
    assert train_problems == policy_train
