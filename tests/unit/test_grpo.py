"""GRPO's pieces against hand computations on small tensors (trainer/grpo.py, groups.py, the GRPO objective)."""

from __future__ import annotations

import math

import pytest
import torch

from semirl.proto import types_pb2
from semirl.spec import RunSpec
from semirl.trainer.groups import SKIP_NO_LOGPROBS, build_group_batch, group_samples
from semirl.trainer.grpo import group_advantages, grpo_loss, k3_kl
from semirl.trainer.logprobs import build_batch, sequence_logps
from semirl.trainer.objectives import GRPOObjective, behaviour_token_logps
from semirl.trainer.pairs import SKIP_ALL_TIED, SKIP_TOO_FEW


def test_advantage_is_reward_minus_group_mean_and_optionally_over_std() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    assert torch.allclose(group_advantages(rewards), torch.tensor([0.4, -0.6, -0.6, 0.4, 0.4]))
    std = math.sqrt((3 * 0.4**2 + 2 * 0.6**2) / 4)  # unbiased
    expected = torch.tensor([0.4, -0.6, -0.6, 0.4, 0.4]) / (std + 1e-6)
    assert torch.allclose(group_advantages(rewards, std_normalize=True), expected)


def test_k3_kl_matches_its_formula_and_is_zero_at_equality() -> None:
    logp, ref = torch.tensor([-1.0, -0.5, -3.0]), torch.tensor([-2.0, -0.5, -1.0])
    hand = [math.exp(-1.0) + 1.0 - 1.0, 0.0, math.exp(2.0) - 2.0 - 1.0]
    assert torch.allclose(k3_kl(logp, ref), torch.tensor(hand))
    assert bool((k3_kl(logp, ref) >= 0).all())


def _one_token(logp: float, behaviour: float, advantage: float, **kwargs: object) -> tuple[float, float, float]:
    """(loss, d loss / d logp, clipped) for a single response token."""
    x = torch.tensor([[logp]], requires_grad=True)
    out = grpo_loss(x, torch.ones(1, 1, dtype=torch.bool), torch.tensor([advantage]),
                    behaviour_logps=torch.tensor([[behaviour]]), **kwargs)  # type: ignore[arg-type]
    out.losses.sum().backward()
    assert x.grad is not None
    return float(out.losses[0].detach()), float(x.grad[0, 0]), float(out.clip_fraction[0])


@pytest.mark.parametrize(("ratio", "advantage", "loss", "grad", "clipped"), [
    (1.5, 1.0, -1.2, 0.0, 1.0),     # ratio above 1+ε with A > 0: clipped, no gradient
    (0.5, 1.0, -0.5, -0.5, 0.0),    # below 1−ε with A > 0: the unclipped term is the minimum
    (0.5, -1.0, 0.8, 0.0, 1.0),     # below 1−ε with A < 0: clipped
    (1.5, -1.0, 1.5, 1.5, 0.0),     # above 1+ε with A < 0: unclipped (pessimistic)
    (1.1, 2.0, -2.2, -2.2, 0.0),    # inside the range: −ρ·A, gradient −ρ·A
])
def test_ppo_clipped_ratio_matches_hand_computation(ratio: float, advantage: float, loss: float, grad: float,
                                                    clipped: float) -> None:
    behaviour = -1.0
    value, gradient, was_clipped = _one_token(behaviour + math.log(ratio), behaviour, advantage, clip_eps=0.2)
    assert value == pytest.approx(loss, abs=1e-5)
    assert gradient == pytest.approx(grad, abs=1e-5)
    assert was_clipped == clipped


def test_truncated_importance_sampling_caps_the_weight() -> None:
    behaviour = -2.0
    for ratio, weight in ((3.0, 2.0), (0.5, 0.5)):
        logp = behaviour + math.log(ratio)
        value, gradient, capped = _one_token(logp, behaviour, 1.0, off_policy_loss="truncated_is", is_cap=2.0)
        assert value == pytest.approx(-weight * logp, abs=1e-5)
        assert gradient == pytest.approx(-weight, abs=1e-5)
        assert capped == (1.0 if ratio > 2.0 else 0.0)


def test_kl_term_and_length_normalization_on_masked_tokens() -> None:
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-0.5, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    adv = torch.tensor([1.0, -1.0])
    out = grpo_loss(logp, mask, adv, ref_logps=ref, kl_beta=0.5)
    kl0 = float(k3_kl(torch.tensor(-1.0), torch.tensor(-1.5)) + k3_kl(torch.tensor(-2.0), torch.tensor(-1.0)))
    assert torch.allclose(out.losses, torch.tensor([-2.0 + 0.5 * kl0, 1.0]), atol=1e-6)
    assert float(out.kl[0]) == pytest.approx(kl0 / 2, abs=1e-6)
    normalized = grpo_loss(logp, mask, adv, ref_logps=ref, kl_beta=0.5, length_normalize=True)
    assert torch.allclose(normalized.losses, torch.tensor([(-2.0 + 0.5 * kl0) / 2, 1.0]), atol=1e-6)


def test_on_policy_gradient_equals_the_reinforce_gradient() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 6, requires_grad=True)
    labels = torch.randint(0, 6, (3, 4))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    adv = torch.tensor([0.7, -0.2, -0.5])

    def token_logps() -> torch.Tensor:
        return torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1) * mask

    out = grpo_loss(token_logps(), mask, adv)
    assert torch.allclose(out.ratio_mean, torch.ones(3))
    (grpo_grad,) = torch.autograd.grad(out.losses.sum(), logits)
    reinforce = -(adv.unsqueeze(-1) * token_logps() * mask).sum()
    (reinforce_grad,) = torch.autograd.grad(reinforce, logits)
    assert torch.allclose(grpo_grad, reinforce_grad, atol=1e-7)
    assert float(out.losses.detach().sum()) == pytest.approx(-float((adv * mask.sum(-1)).sum()))


def _scored(rewards: list[float], *, logprobs: bool = True, empty: tuple[int, ...] = (),
            prompt_id: str = "t1-0") -> types_pb2.ScoredGroup:
    samples = []
    for i, _ in enumerate(rewards):
        tokens = [] if i in empty else [5 + i, 6 + i]
        samples.append(types_pb2.Sample(token_ids=tokens, logprobs=[-0.5] * len(tokens) if logprobs else []))
    group = types_pb2.SampleGroup(task=types_pb2.PromptTask(run_id="r", prompt_id=prompt_id),
                                  prompt_token_ids=[1, 2], samples=samples, policy_version=3)
    return types_pb2.ScoredGroup(group=group, rewards=rewards)


def test_groups_with_equal_rewards_or_too_few_samples_are_skipped_and_counted() -> None:
    batch = build_group_batch([_scored([1.0, 1.0, 1.0]), _scored([1.0, 0.0], empty=(1,), prompt_id="t1-1")],
                              std_normalize=False, need_logprobs=False)
    assert batch.samples == []
    assert list(batch.skipped.values()) == [SKIP_ALL_TIED, SKIP_TOO_FEW]
    samples, reason = group_samples(_scored([1.0, 0.0, 0.0], empty=(2,)), std_normalize=False, need_logprobs=False)
    assert reason == ""
    assert [s.advantage for s in samples] == [0.5, -0.5]  # the empty sample is not part of the group
    assert all(s.group_size == 2 and s.policy_version == 3 for s in samples)


def test_off_policy_groups_need_the_generators_logprobs() -> None:
    _, reason = group_samples(_scored([1.0, 0.0], logprobs=False), std_normalize=False, need_logprobs=True)
    assert reason == SKIP_NO_LOGPROBS
    samples, reason = group_samples(_scored([1.0, 0.0]), std_normalize=False, need_logprobs=True)
    assert reason == "" and samples[0].behaviour_logps == (-0.5, -0.5)


def _spec(**sync: object) -> RunSpec:
    return RunSpec.model_validate({
        "name": "g", "algorithm": "grpo", "model": {"path": "m"}, "data": {"train": {"path": "t.jsonl"}},
        "train": {"steps": 4}, "sync": sync,
    })


def test_behaviour_logprobs_line_up_with_the_trainers_token_columns() -> None:
    """Behaviour logprobs equal to the policy's own make every ratio exactly 1 (nothing clipped)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, head_dim=8))
    objective = GRPOObjective(_spec(interval=2))
    assert objective.off_policy
    samples, _ = group_samples(_scored([1.0, 0.0, 0.0]), std_normalize=False, need_logprobs=True)
    with torch.no_grad():
        policy = sequence_logps(model, build_batch(objective.sequences(samples)))
    own = [tuple(float(v) for v in row[mask]) for row, mask in zip(policy.token_logps, policy.mask, strict=True)]
    samples = [s.__class__(**{**s.__dict__, "behaviour_logps": o}) for s, o in zip(samples, own, strict=True)]
    behaviour = behaviour_token_logps(samples, policy.token_logps)
    assert torch.equal(behaviour, policy.token_logps)
    result = objective.loss(samples, policy, None)
    assert result.sums["clip_fraction"] == 0.0
    assert result.sums["ratio_mean"] == pytest.approx(len(samples))
    assert result.maxima["ratio_max"] == pytest.approx(1.0)


def test_on_policy_only_at_sync_interval_one_without_staleness() -> None:
    assert _spec(interval=1).grpo_on_policy and not _spec(interval=1).sample_logprobs
    assert not _spec(interval=4).grpo_on_policy and _spec(interval=4).sample_logprobs
    assert not _spec(interval="offline").grpo_on_policy
