"""dpo_loss against hand computations, and sequence logprobs from token ids."""

from __future__ import annotations

import math

import pytest
import torch

from semirl.trainer.dpo import dpo_loss
from semirl.trainer.logprobs import build_batch, sequence_logps

PC = torch.tensor([-5.0, -8.0])   # policy chosen logps
PR = torch.tensor([-7.0, -6.0])   # policy rejected
RC = torch.tensor([-6.0, -8.5])   # reference chosen
RR = torch.tensor([-6.5, -5.0])   # reference rejected
NC = torch.tensor([5.0, 4.0])     # chosen tokens
NR = torch.tensor([7.0, 2.0])     # rejected tokens


def _neg_log_sigmoid(x: float) -> float:
    return math.log1p(math.exp(-x))


def test_plain_dpo_matches_the_equation() -> None:
    beta = 0.1
    out = dpo_loss(PC, PR, RC, RR, beta=beta)
    # pair 0: (−5 − −6) − (−7 − −6.5) = 1 + 0.5 = 1.5;  pair 1: (−8 − −8.5) − (−6 − −5) = 0.5 + 1 = 1.5
    expected = [_neg_log_sigmoid(beta * 1.5), _neg_log_sigmoid(beta * 1.5)]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-6)
    assert out.loss.item() == pytest.approx(sum(expected) / 2, rel=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([0.1, 0.05])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.05, -0.1])
    metrics = out.metrics()
    assert metrics["margin"] == pytest.approx(0.15)
    assert metrics["pref_accuracy"] == 1.0


def test_nll_term_is_per_token_chosen_nll() -> None:
    beta, nll = 0.1, 0.5
    out = dpo_loss(PC, PR, RC, RR, beta=beta, chosen_tokens=NC, rejected_tokens=NR, nll_coef=nll)
    expected = [
        _neg_log_sigmoid(beta * 1.5) + nll * (5.0 / 5.0),
        _neg_log_sigmoid(beta * 1.5) + nll * (8.0 / 4.0),
    ]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-6)


def test_length_normalization_divides_every_logp_by_its_length() -> None:
    beta = 1.0
    out = dpo_loss(PC, PR, RC, RR, beta=beta, chosen_tokens=NC, rejected_tokens=NR, length_normalize=True)
    # pair 0: (−5/5 − −6/5) − (−7/7 − −6.5/7) = 0.2 + 0.5/7 ; pair 1: (−8/4 − −8.5/4) − (−6/2 − −5/2) = 0.125 + 0.5
    margins = [0.2 + 0.5 / 7, 0.125 + 0.5]
    assert out.losses.tolist() == pytest.approx([_neg_log_sigmoid(m) for m in margins], rel=1e-6)
    assert (out.chosen_rewards - out.rejected_rewards).tolist() == pytest.approx(margins, rel=1e-6)


def test_entropy_bonus_and_gradient_direction() -> None:
    entropy = torch.tensor([2.0, 3.0])
    base = dpo_loss(PC, PR, RC, RR, beta=0.1)
    bonus = dpo_loss(PC, PR, RC, RR, beta=0.1, entropy=entropy, entropy_coef=0.01)
    assert (base.losses - bonus.losses).tolist() == pytest.approx([0.02, 0.03], rel=1e-5)
    chosen = PC.clone().requires_grad_(True)
    rejected = PR.clone().requires_grad_(True)
    dpo_loss(chosen, rejected, RC, RR, beta=0.1).loss.backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()  # descent raises chosen, lowers rejected


def test_options_need_token_counts() -> None:
    with pytest.raises(ValueError):
        dpo_loss(PC, PR, RC, RR, beta=0.1, nll_coef=1.0)


class _Bigram(torch.nn.Module):
    """logits at position i depend only on token i: a model whose logprobs are easy to compute by hand."""

    def __init__(self, vocab: int = 7) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, input_ids, attention_mask=None, use_cache=None):  # noqa: ANN001, ANN201
        return type("Out", (), {"logits": self.table[input_ids]})()


def test_sequence_logps_sum_response_tokens_only() -> None:
    model = _Bigram()
    batch = build_batch([([1, 2], [3, 4, 5]), ([6], [2])], pad_token_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5], [6, 2, 0, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    out = sequence_logps(model, batch)
    logp = torch.log_softmax(model.table.detach(), dim=-1)
    expected0 = logp[2, 3] + logp[3, 4] + logp[4, 5]
    expected1 = logp[6, 2]
    assert out.logps.tolist() == pytest.approx([expected0.item(), expected1.item()], rel=1e-5)
    assert out.tokens.tolist() == [3.0, 1.0]
    entropy = -(logp.exp() * logp).sum(-1)
    assert out.entropy.tolist() == pytest.approx([entropy[[2, 3, 4]].mean().item(), entropy[6].item()], rel=1e-5)
    assert not out.entropy.requires_grad and out.logps.requires_grad
