"""A tiny reward model for a non-verifiable task: a sequence classifier trained in code to imitate `target_score`.

The property. `target_score` rewards responses whose digits are sevens: its content term is the share of the
response's digits that are ``7`` (0 without digits). No verifier can check it (it is not correctness: the right
sum of 55+28 has no 7 in it), and it is smooth: every digit the policy writes moves it a little.

Why the tiny policy can learn it. The tiny model's answers are column additions, `` 5+8=13, 5+2+1=8. \\boxed{83}``,
a dozen digits each; sampled at temperature 1.0 it writes a wrong digit often enough (about one digit in fifteen is
a 7) that a prompt's group of samples holds answers with more and fewer sevens. Raising the probability of the ``7``
token wherever a digit goes is a one-direction shift of the output layer, which a 2-layer model makes in a few dozen
steps: semi-online DPO with examples/tiny-rm-dpo.yaml's settings (best vs worst of 8, s = 4, lr 1e-4, 40 steps)
took the held-out share of sevens from 0.07 to 0.25 and the mean score from 0.63 to 0.84 (the target moved with it,
0.63 to 0.84). It is reward hacking by design (the sums get wrong), which is what a learned reward invites.

The length bias. Like the paper's Athene-RM, which favours long answers, the target adds 0.02 per response
character up to 50 characters (the reference answers are about 28), so a longer response with the same content
scores higher. That is why the paper chooses checkpoints by score ÷ response length rather than by the raw score:
a policy that only grows its answers climbs the raw score without getting better. Both terms lie in [0, 1], so
the target lies in [0, 2] and stays positive (a score ÷ length is then meaningful). In the 40-step run above the
answers barely grew (24.3 to 24.9 tokens): the seed's samples vary little in length, so sevens drive early RL.

The model. An HF `LlamaForSequenceClassification` (one label, hidden 64, 2 layers) on the policy's own tokenizer and
vocabulary, saved with that tokenizer beside it so the chat template matches. It is read as the reward service reads
it: the chat template over [user: prompt, assistant: response] (no generation prompt), scored at the last token (the
``<eos>`` the template ends the assistant turn with). It regresses `target_score` (MSE, AdamW) on (prompt, response)
pairs from the policy's train prompts, with responses the policy samples at temperature 1.0 and perturbations of
those and of the reference answers (truncations, repeats, extra digit groups, digits turned to 7 or to noise), so it
sees shorter and longer, more- and fewer-sevens answers than the seed writes, where RL will take the policy. Its
fit is measured on the eval-split prompts, which it never trains on.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from pydantic import BaseModel
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerBase,
)

from semirl.core.files import share_readable
from semirl.data.synthetic import Split, expression_of, make_problems, reference_response, write_jsonl, wrong_response
from semirl.tinymodel.sampling import sample
from semirl.tinymodel.sft import epoch_batches

STAMP = "tiny_reward_model.json"
MODEL_DIR = "reward_model"
RM_TRAIN, RM_EVAL = "rm_train.jsonl", "rm_eval.jsonl"
REWARD_SOURCE = "reward_model"

LENGTH_PER_CHAR = 0.02
LENGTH_CAP_CHARS = 50       # the length term saturates at 1.0
MAX_RESPONSE_CHARS = 80     # perturbed responses are cut here (the length term saturates at 50)


def target_score(response: str) -> float:
    """The preference the reward model imitates, in [0, 2]: the share of the response's digits that are 7, plus
    0.02 per character up to 50 characters (the Athene-RM-like length bias)."""
    digits = [c for c in response if c.isdigit()]
    sevens = sum(c == "7" for c in digits) / len(digits) if digits else 0.0
    return sevens + LENGTH_PER_CHAR * min(len(response), LENGTH_CAP_CHARS)


class RewardModelParams(BaseModel):
    """Everything the build depends on besides the policy (whose digest the stamp records too)."""
    seed: int = 0
    hidden: int = 64
    layers: int = 2
    heads: int = 2              # head_dim 32
    max_positions: int = 256
    n_prompts: int = 2000       # train prompts (from the policy's train file) the pairs are drawn from
    n_sampled: int = 256        # of them, prompts answered by the policy itself (2 samples each, temperature 1.0)
    samples_per_prompt: int = 2
    max_new_tokens: int = 32
    n_perturbed: int = 4000     # perturbed pairs
    n_heldout: int = 400        # eval-split pairs for the fit statistics
    n_heldout_sampled: int = 64  # of them, eval prompts answered by the policy (2 samples each)
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 20
    version: int = 1


class RewardModelFit(BaseModel):
    """How well the model imitates `target_score` on held-out (eval-split) pairs."""
    pearson: float
    spearman: float
    pairwise_accuracy: float    # share of pairs (targets at least 0.05 apart) the model orders as the target does
    length_gain: float          # mean score(response repeated twice) - score(response): the length bias it learned
    train_pairs: int
    heldout_pairs: int
    final_loss: float           # mean MSE over the last 20 steps


class TinyRewardModel(BaseModel):
    model_dir: Path
    policy_digest: str
    fit: RewardModelFit
    build_seconds: float
    params: RewardModelParams


def build_tiny_reward_model(out_dir: Path, policy_dir: Path, train_path: Path, seed: int = 0,
                            params: RewardModelParams | None = None) -> TinyRewardModel:
    """Write out_dir/reward_model/ (safetensors + the policy's tokenizer); a no-op when the stamp matches `params`
    and the policy is the one it was trained against."""
    out_dir, policy_dir = Path(out_dir), Path(policy_dir)
    params = (params or RewardModelParams()).model_copy(update={"seed": seed})
    digest = policy_digest(policy_dir)
    stamp = out_dir / STAMP
    if stamp.is_file():
        built = TinyRewardModel.model_validate_json(stamp.read_text())
        if built.params == params and built.policy_digest == digest and (built.model_dir / "config.json").is_file():
            return built
    with _one_thread():
        built = _build(out_dir, policy_dir, Path(train_path), params, digest)
    stamp.write_text(json.dumps(built.model_dump(mode="json"), indent=2))
    return built


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread: ops on a 64-wide model are too small to split, and on a shared 2-core machine two
    threads that wait on each other made the build ten times slower (380 s against 38 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _build(out_dir: Path, policy_dir: Path, train_path: Path, params: RewardModelParams,
           digest: str) -> TinyRewardModel:
    seed = params.seed
    started = time.perf_counter()
    rng = random.Random(seed)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    policy = LlamaForCausalLM.from_pretrained(policy_dir)
    train_rows = _read_rows(train_path)[:params.n_prompts]
    heldout_rows = make_problems(params.n_heldout, seed, "eval")

    train_pairs = _pairs(policy, tokenizer, train_rows, params.n_sampled, params.n_perturbed, params, seed, rng)
    heldout_pairs = _pairs(policy, tokenizer, heldout_rows, params.n_heldout_sampled, params.n_heldout, params,
                           seed + 1, rng)
    del policy

    model = make_reward_model(tokenizer, params)
    losses = _train(model, tokenizer, train_pairs, params)
    fit = _fit(model, tokenizer, train_pairs, heldout_pairs, heldout_rows, losses)

    model_dir = out_dir / MODEL_DIR
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    share_readable(model_dir)
    return TinyRewardModel(model_dir=model_dir, policy_digest=digest, fit=fit,
                           build_seconds=round(time.perf_counter() - started, 1), params=params)


def make_reward_model(tokenizer: PreTrainedTokenizerBase, params: RewardModelParams) -> LlamaForSequenceClassification:
    """A fresh one-label Llama classifier on the policy's vocabulary; pad_token_id lets HF find each row's last
    token in a padded batch."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=params.hidden,
        intermediate_size=4 * params.hidden,
        num_hidden_layers=params.layers,
        num_attention_heads=params.heads,
        num_key_value_heads=params.heads,
        head_dim=params.hidden // params.heads,
        max_position_embeddings=params.max_positions,
        num_labels=1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(params.seed)
    return LlamaForSequenceClassification(config)


def rendered_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str) -> list[int]:
    """The reward service's input: the whole conversation through the chat template, ending with the assistant
    turn's <eos> (the position the score is read at)."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=True, return_dict=False)
    return [int(i) for i in ids]


def policy_digest(policy_dir: Path) -> str:
    """A digest of the policy's weights and tokenizer: the reward model is rebuilt when the policy changes."""
    digest = hashlib.sha256()
    for name in ("tokenizer.json", "model.safetensors"):
        path = Path(policy_dir) / name
        digest.update(path.read_bytes() if path.is_file() else name.encode())
    return digest.hexdigest()[:16]


# --- the non-verifiable task ---------------------------------------------------------------------------------


def prompt_rows(n: int, seed: int, split: Split) -> list[dict[str, str]]:
    """The tiny arithmetic prompts as rows of a reward-model task: no answer, scored by the reward model."""
    return [{"problem": row["problem"], "answer": "", "reward_source": REWARD_SOURCE}
            for row in make_problems(n, seed, split)]


def write_rm_task(data_dir: Path, seed: int, n_train: int = 2000, n_eval: int = 200) -> tuple[Path, Path]:
    """data_dir/rm_train.jsonl (train-split prompts) and data_dir/rm_eval.jsonl (held-out eval-split prompts)."""
    data_dir = Path(data_dir)
    train = write_jsonl(prompt_rows(n_train, seed, "train"), data_dir / RM_TRAIN)
    held_out = write_jsonl(prompt_rows(n_eval, seed, "eval"), data_dir / RM_EVAL)
    return train, held_out


# --- training data -------------------------------------------------------------------------------------------


def perturb(response: str, rng: random.Random) -> str:
    """A random variant of `response`: digits turned to 7 or to noise, extra digit groups, repeats, a truncation.
    Each moves the content term, the length term or both, so the model sees both directions of each."""
    text = response
    if rng.random() < 0.4:
        p = rng.random()
        text = "".join("7" if c.isdigit() and rng.random() < p else c for c in text)
    if rng.random() < 0.25:
        p = rng.random() * 0.6
        text = "".join(str(rng.randrange(10)) if c.isdigit() and rng.random() < p else c for c in text)
    if rng.random() < 0.3:
        sevens = rng.random() * 0.6
        groups = []
        for _ in range(rng.randint(1, 4)):
            a, b = (7 if rng.random() < sevens else rng.randrange(10) for _ in range(2))
            groups.append(f" {a}+{b}={a + b},")
        cut = text.find(",") + 1 or len(text)
        text = text[:cut] + "".join(groups) + text[cut:]
    if rng.random() < 0.3:
        text = " ".join([text] * rng.randint(2, 3))
    if rng.random() < 0.25 and len(text) > 2:
        text = text[:rng.randrange(1, len(text))]
    return text[:MAX_RESPONSE_CHARS]


def _pairs(policy: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, str]],
           n_sampled: int, n_total: int, params: RewardModelParams, seed: int,
           rng: random.Random) -> list[tuple[str, str]]:
    """(prompt, response) pairs: the policy's own samples for the first `n_sampled` rows, then perturbations of
    samples, reference answers and forgotten-carry answers for random rows, `n_total` in all."""
    sampled_rows = rows[:n_sampled]
    groups = sample(policy, tokenizer, [r["problem"] for r in sampled_rows], params.samples_per_prompt,
                    temperature=1.0, top_p=1.0, max_new_tokens=params.max_new_tokens, seed=seed)
    own = [(row["problem"], tokenizer.decode(ids, skip_special_tokens=True))
           for row, group in zip(sampled_rows, groups, strict=True) for ids in group]
    pairs = list(own)
    while len(pairs) < n_total:
        kind = rng.random()
        if kind < 0.3:
            prompt, base = rng.choice(own)
        else:
            row = rng.choice(rows)
            prompt = row["problem"]
            base = reference_response(row) if kind < 0.85 else wrong_response(expression_of(prompt))
        pairs.append((prompt, perturb(base, rng) if rng.random() < 0.8 else base))
    return pairs[:n_total]


def _read_rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- training and fit ----------------------------------------------------------------------------------------


def _batch(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask): HF's classifier reads each row at its last non-pad token."""
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        attention[i, :len(ids)] = 1
    return input_ids, attention


def _train(model: LlamaForSequenceClassification, tokenizer: PreTrainedTokenizerBase,
           pairs: list[tuple[str, str]], params: RewardModelParams) -> list[float]:
    """MSE regression to `target_score` with AdamW, warmup then cosine decay; returns the per-step losses."""
    data = [(rendered_ids(tokenizer, p, r), target_score(r)) for p, r in pairs]
    rng = random.Random(params.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=0.01)

    def lr_scale(step: int) -> float:
        if step < params.warmup_steps:
            return (step + 1) / params.warmup_steps
        progress = (step - params.warmup_steps) / max(1, params.steps - params.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_scale)
    model.train()
    losses: list[float] = []
    batches = epoch_batches(len(data), params.batch_size, rng)
    for _ in range(params.steps):
        batch = [data[i] for i in next(batches)]
        input_ids, attention = _batch([ids for ids, _ in batch], tokenizer.pad_token_id)
        targets = torch.tensor([t for _, t in batch])
        scores = model(input_ids=input_ids, attention_mask=attention).logits.squeeze(-1)
        loss = torch.nn.functional.mse_loss(scores, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def score_pairs(model: LlamaForSequenceClassification, tokenizer: PreTrainedTokenizerBase,
                pairs: list[tuple[str, str]], batch_size: int = 256) -> list[float]:
    """The model's score of each (prompt, response), in right-padded batches."""
    model.eval()
    scores: list[float] = []
    for start in range(0, len(pairs), batch_size):
        rows = [rendered_ids(tokenizer, p, r) for p, r in pairs[start:start + batch_size]]
        input_ids, attention = _batch(rows, tokenizer.pad_token_id)
        scores += model(input_ids=input_ids, attention_mask=attention).logits.squeeze(-1).tolist()
    return scores


def _fit(model: LlamaForSequenceClassification, tokenizer: PreTrainedTokenizerBase,
         train_pairs: list[tuple[str, str]], heldout_pairs: list[tuple[str, str]],
         heldout_rows: list[dict[str, str]], losses: list[float]) -> RewardModelFit:
    scores = score_pairs(model, tokenizer, heldout_pairs)
    targets = [target_score(r) for _, r in heldout_pairs]
    references = [(row["problem"], reference_response(row)) for row in heldout_rows]
    short = score_pairs(model, tokenizer, references)
    long = score_pairs(model, tokenizer, [(p, f"{r} {r}") for p, r in references])
    return RewardModelFit(
        pearson=round(pearson(scores, targets), 4),
        spearman=round(pearson(_ranks(scores), _ranks(targets)), 4),
        pairwise_accuracy=round(pairwise_accuracy(scores, targets), 4),
        length_gain=round(sum(b - a for a, b in zip(short, long, strict=True)) / len(short), 4),
        train_pairs=len(train_pairs),
        heldout_pairs=len(heldout_pairs),
        final_loss=round(sum(losses[-20:]) / len(losses[-20:]), 5),
    )


def pearson(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    vx = sum((x - mx) ** 2 for x in xs)
    vy = sum((y - my) ** 2 for y in ys)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else 0.0


def _ranks(xs: list[float]) -> list[float]:
    """Ranks with ties averaged (Spearman's correlation is Pearson's on these)."""
    order = sorted(range(len(xs)), key=xs.__getitem__)
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def pairwise_accuracy(scores: list[float], targets: list[float], margin: float = 0.05) -> float:
    """The share of pairs whose targets differ by at least `margin` that `scores` order the same way."""
    agree = total = 0
    for i in range(len(scores)):
        for j in range(i + 1, len(scores)):
            if abs(targets[i] - targets[j]) < margin:
                continue
            total += 1
            agree += (scores[i] - scores[j]) * (targets[i] - targets[j]) > 0
    return agree / total if total else 0.0
