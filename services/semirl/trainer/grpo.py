"""The GRPO loss (Shao et al., 2024) in the variant the paper runs (docs/architecture.md, algorithms: GRPO).

Every function works on per-token tensors [B, T] aligned like `SeqLogps.token_logps` (column i holds the logprob
of token i+1) with a response mask of the same shape; nothing here knows about ranks or DeepSpeed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

OffPolicyLoss = Literal["ppo_clip", "truncated_is"]


def group_advantages(rewards: torch.Tensor, *, std_normalize: bool = False, eps: float = 1e-6) -> torch.Tensor:
    """Âᵢ = rᵢ − mean(r) over one group's rewards [G]; with `std_normalize`, ÷ (std(r) + eps) (fairseq2's and
    DeepSeekMath's choice; the unbiased std, as TRL and fairseq2 take it). Off by default, as in Dr. GRPO: dividing by
    the std up-weights groups whose rewards barely differ (nearly solved or nearly hopeless prompts)."""
    advantages = rewards - rewards.mean()
    if std_normalize:
        std = rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())
        advantages = advantages / (std + eps)
    return advantages


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(πθ ‖ πref) per token: exp(ref − logp) − (ref − logp) − 1 (≥ 0, unbiased)."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


@dataclass
class GRPOLoss:
    losses: torch.Tensor       # [B] per-sequence loss: token losses summed (or averaged with length_normalize)
    kl: torch.Tensor           # [B] mean token k3 KL to the reference (detached; 0 without one)
    clip_fraction: torch.Tensor  # [B] share of tokens whose gradient the clip removed (detached)
    ratio_mean: torch.Tensor   # [B] mean token ratio πθ / π_behaviour (detached; 1 on-policy)
    ratio_max: torch.Tensor    # [B] largest token ratio (detached)


def grpo_loss(
    token_logps: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    *,
    behaviour_logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    clip_eps: float = 0.2,
    off_policy_loss: OffPolicyLoss = "ppo_clip",
    is_cap: float = 2.0,
    length_normalize: bool = False,
) -> GRPOLoss:
    """Per-sequence GRPO loss with a sequence-level advantage Âᵢ applied to every token t of response i:

        on-policy (behaviour_logps None):  ℓᵢₜ = −ρᵢₜ·Âᵢ,  ρᵢₜ = exp(log πθ − sg[log πθ]) = 1
            (the value is −Âᵢ, the gradient −Âᵢ·∇log πθ: REINFORCE with a group baseline)
        off-policy, ppo_clip:              ℓᵢₜ = −min(ρᵢₜ·Âᵢ, clip(ρᵢₜ, 1−ε, 1+ε)·Âᵢ),  ρᵢₜ = exp(log πθ − log μ)
        off-policy, truncated_is:          ℓᵢₜ = −min(sg[ρᵢₜ], C)·Âᵢ·log πθ   (truncated importance sampling)
        KL (kl_beta > 0, ref_logps given): ℓᵢₜ += β·(exp(log πref − log πθ) − (log πref − log πθ) − 1)

    μ is the policy that sampled the response (the generator's per-token logprobs). Sequence loss: Σₜ ℓᵢₜ, or
    Σₜ ℓᵢₜ / |yᵢ| with `length_normalize`. The caller averages over the group and normalizes over prompts.
    """
    mask = mask.to(token_logps.dtype)
    advantage = advantages.unsqueeze(-1).to(token_logps.dtype)
    zero = token_logps.new_zeros(())
    if behaviour_logps is None:
        ratio = torch.exp(token_logps - token_logps.detach())
        per_token = -ratio * advantage
        clipped = torch.zeros_like(token_logps)
    else:
        log_ratio = (token_logps - behaviour_logps) * mask  # masked first: padding must not overflow exp
        ratio = torch.exp(log_ratio)
        if off_policy_loss == "ppo_clip":
            unclipped = ratio * advantage
            clamped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantage
            per_token = -torch.minimum(unclipped, clamped)
            clipped = (clamped < unclipped).to(token_logps.dtype).detach()
        elif off_policy_loss == "truncated_is":
            weight = torch.clamp(ratio.detach(), max=is_cap)
            per_token = -weight * advantage * token_logps
            clipped = (ratio.detach() > is_cap).to(token_logps.dtype)
        else:
            raise ValueError(f"unknown off-policy loss {off_policy_loss!r}")
    tokens = mask.sum(-1).clamp(min=1)
    kl = torch.zeros_like(token_logps)
    if ref_logps is not None and kl_beta:
        kl = k3_kl(token_logps, ref_logps) * mask
        per_token = per_token + kl_beta * kl
    losses = (per_token * mask).sum(-1)
    if length_normalize:
        losses = losses / tokens
    detached_ratio = ratio.detach() * mask
    return GRPOLoss(
        losses=losses,
        kl=(kl.detach().sum(-1) / tokens),
        clip_fraction=(clipped * mask).sum(-1) / tokens,
        ratio_mean=detached_ratio.sum(-1) / tokens,
        ratio_max=torch.where(mask.bool(), ratio.detach(), zero).amax(-1) if mask.numel() else zero,
    )
