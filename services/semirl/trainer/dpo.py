"""The DPO loss (Rafailov et al., 2023) with the options the paper's recipes use (docs/architecture.md, algorithms)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812


@dataclass
class DPOLoss:
    losses: torch.Tensor            # [B] per-pair loss (DPO + optional NLL − entropy bonus)
    chosen_rewards: torch.Tensor    # [B] β·(log πθ(yw|x) − log πref(yw|x)), detached
    rejected_rewards: torch.Tensor  # [B] β·(log πθ(yl|x) − log πref(yl|x)), detached

    @property
    def loss(self) -> torch.Tensor:
        return self.losses.mean()

    def metrics(self) -> dict[str, float]:
        margin = self.chosen_rewards - self.rejected_rewards
        return {
            "reward_chosen": float(self.chosen_rewards.mean()),
            "reward_rejected": float(self.rejected_rewards.mean()),
            "margin": float(margin.mean()),
            "pref_accuracy": float((margin > 0).float().mean()),
        }


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
    length_normalize: bool = False,
    nll_coef: float = 0.0,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> DPOLoss:
    """Per-pair DPO loss.

        L_DPO = −log σ( β·[ (log πθ(yw|x) − log πref(yw|x)) − (log πθ(yl|x) − log πref(yl|x)) ] )

    All logps are summed over the response tokens. With `length_normalize` each logp is first divided by its
    response length (so the margin compares mean per-token logprobs). Optional terms:

        + nll_coef · ( −log πθ(yw|x) / |yw| )     NLL on the chosen response, normalized per token
        − entropy_coef · H                         H = mean token entropy of the policy (a bonus: maximized)
    """
    if (length_normalize or nll_coef) and (chosen_tokens is None or rejected_tokens is None):
        raise ValueError("length normalization and the NLL term need chosen_tokens and rejected_tokens")
    pc, pr, rc, rr = policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    if length_normalize:
        nc, nr = chosen_tokens.clamp(min=1), rejected_tokens.clamp(min=1)
        pc, pr, rc, rr = pc / nc, pr / nr, rc / nc, rr / nr
    chosen_logratios = pc - rc
    rejected_logratios = pr - rr
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    if nll_coef:
        losses = losses + nll_coef * (-policy_chosen_logps / chosen_tokens.clamp(min=1))
    if entropy_coef and entropy is not None:
        losses = losses - entropy_coef * entropy
    return DPOLoss(
        losses=losses,
        chosen_rewards=(beta * chosen_logratios).detach(),
        rejected_rewards=(beta * rejected_logratios).detach(),
    )
