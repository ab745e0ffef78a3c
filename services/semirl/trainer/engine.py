"""The DPO training engine: an HF causal LM wrapped by DeepSpeed (ZeRO), plus a frozen reference model.

One `train_step` = one optimizer step. The step's pairs are split into micro batches of
`train.micro_batch_pairs`; gradients are accumulated over them. The number of pairs varies per step (groups
with all-same rewards are skipped), so the engine runs DeepSpeed with `managed_gradient_accumulation: false`:
`backward()` only accumulates, and `step()` is the accumulation boundary (gradient reduction, clipping and the
AdamW update), however many micro batches came before it. Each micro batch's loss is its pairs' summed loss
divided by the step's total pair count and backpropagated with `scale_wrt_gas=False`, so the accumulated
gradient is exactly the gradient of the mean loss over all pairs of the step.

On a machine without CUDA, DeepSpeed runs on its CPU accelerator (`DS_ACCELERATOR=cpu`, fp32, gloo); it builds
its shared-memory comm op (a C++ extension, cached under ~/.cache/torch_extensions) on first use.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from semirl.spec import RunSpec
from semirl.trainer.dpo import dpo_loss
from semirl.trainer.logprobs import SeqBatch, build_batch, sequence_logps
from semirl.trainer.pairs import Pair

log = logging.getLogger(__name__)

DS_CHECKPOINT_DIR = "deepspeed"
DS_CHECKPOINT_TAG = "state"
REF_WEIGHTS = "ref.safetensors"


def import_deepspeed():  # noqa: ANN201
    """Import deepspeed with the CPU accelerator selected when there is no CUDA device."""
    if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed

    return deepspeed


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_distributed() -> None:
    """Initialize torch.distributed once; single-process (gloo on CPU) when no launcher set WORLD_SIZE."""
    deepspeed = import_deepspeed()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(
            RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port())
        )
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend, verbose=False)


def deepspeed_config(spec: RunSpec) -> dict[str, Any]:
    micro = spec.train.micro_batch_pairs
    gas = max(1, math.ceil(spec.train.batch_prompts / micro))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": gas,  # nominal; the real boundary is each step() call (below)
        "train_batch_size": micro * gas * world,
        "managed_gradient_accumulation": False,
        "gradient_clipping": spec.optim.grad_clip,
        "zero_optimization": {"stage": spec.deepspeed.zero_stage, "overlap_comm": False},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def _chunks(items: Sequence[Pair], size: int) -> list[Sequence[Pair]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class DPOEngine:
    """Policy (DeepSpeed engine) + frozen reference model for one run."""

    def __init__(self, spec: RunSpec, model_path: str | Path | None = None) -> None:
        from transformers import AutoModelForCausalLM

        deepspeed = import_deepspeed()
        ensure_distributed()
        self.spec = spec
        self.model_path = str(model_path or spec.model.path)
        torch.manual_seed(spec.train.seed)
        policy = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        policy.config.use_cache = False
        self.ref = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        self.ref.eval().requires_grad_(False)
        optim = spec.optim
        optimizer = torch.optim.AdamW(
            policy.parameters(), lr=optim.lr, betas=tuple(optim.betas), eps=optim.adam_eps,
            weight_decay=optim.weight_decay,
        )
        scheduler = None
        if optim.warmup_steps:
            warmup = optim.warmup_steps
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        self.engine, _, _, _ = deepspeed.initialize(
            model=policy, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(spec)
        )
        self.device = self.engine.device
        self.ref.to(self.device)
        config = policy.config
        pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
        if isinstance(pad, list):
            pad = pad[0]
        self.pad_token_id = int(pad or 0)
        self.step = 0            # optimizer steps taken in the run, counting steps with no pairs
        self.updates = 0         # steps that actually changed the weights
        self.ref_synced_at = 0   # step at which the reference was last set to the policy (0 = the seed)

    # --- training -------------------------------------------------------------------------------------

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    def _batch(self, chunk: Sequence[Pair]) -> SeqBatch:
        sequences = [(p.prompt_token_ids, p.chosen_token_ids) for p in chunk]
        sequences += [(p.prompt_token_ids, p.rejected_token_ids) for p in chunk]
        batch = build_batch(sequences, self.pad_token_id)
        return SeqBatch(*(t.to(self.device) for t in (batch.input_ids, batch.attention_mask, batch.response_mask)))

    def train_step(self, pairs: Sequence[Pair]) -> dict[str, float]:
        """One optimizer step on `pairs` (none: no update, but the step still counts)."""
        dpo = self.spec.dpo
        sums = dict.fromkeys(
            ("loss", "chosen_logp", "rejected_logp", "margin", "pref_accuracy", "reward_chosen",
             "reward_rejected", "pair_tokens", "entropy"), 0.0,
        )
        total = len(pairs)
        if total:
            self.engine.train()
            for chunk in _chunks(pairs, self.spec.train.micro_batch_pairs):
                m = len(chunk)
                batch = self._batch(chunk)
                with torch.no_grad():
                    ref = sequence_logps(self.ref, batch)
                out = sequence_logps(self.engine, batch, entropy_grad=dpo.entropy_coef > 0)
                result = dpo_loss(
                    out.logps[:m], out.logps[m:], ref.logps[:m], ref.logps[m:],
                    beta=dpo.beta, chosen_tokens=out.tokens[:m], rejected_tokens=out.tokens[m:],
                    length_normalize=dpo.length_normalize, nll_coef=dpo.nll_coef,
                    entropy=(out.entropy[:m] + out.entropy[m:]) / 2, entropy_coef=dpo.entropy_coef,
                )
                self.engine.backward(result.losses.sum() / total, scale_wrt_gas=False)
                margin = result.chosen_rewards - result.rejected_rewards
                sums["loss"] += float(result.losses.detach().sum())
                sums["chosen_logp"] += float(out.logps[:m].detach().sum())
                sums["rejected_logp"] += float(out.logps[m:].detach().sum())
                sums["margin"] += float(margin.sum())
                sums["pref_accuracy"] += float((margin > 0).float().sum())
                sums["reward_chosen"] += float(result.chosen_rewards.sum())
                sums["reward_rejected"] += float(result.rejected_rewards.sum())
                sums["pair_tokens"] += float(out.tokens.sum()) / 2
                sums["entropy"] += float(out.entropy.detach().sum()) / 2
            self.engine.step()  # the accumulation boundary: reduce, clip, AdamW (and LR schedule) once
            self.updates += 1
        self.step += 1
        metrics = {key: value / total if total else 0.0 for key, value in sums.items()}
        grad_norm = self.engine.get_global_grad_norm() if total else None
        metrics["grad_norm"] = float(grad_norm) if grad_norm is not None else 0.0
        metrics["lr"] = float(self.engine.get_lr()[0])
        interval = self.spec.ref_sync_interval
        if interval and self.step % interval == 0:
            self.sync_ref()
        return metrics

    @torch.no_grad()
    def evaluate(self, pairs: Sequence[Pair]) -> dict[str, float]:
        """DPO metrics of `pairs` under the current policy and reference, without any update."""
        self.engine.eval()
        chosen, rejected, ref_chosen, ref_rejected = [], [], [], []
        for chunk in _chunks(pairs, self.spec.train.micro_batch_pairs):
            m = len(chunk)
            batch = self._batch(chunk)
            out, ref = sequence_logps(self.module, batch), sequence_logps(self.ref, batch)
            chosen.append(out.logps[:m])
            rejected.append(out.logps[m:])
            ref_chosen.append(ref.logps[:m])
            ref_rejected.append(ref.logps[m:])
        result = dpo_loss(
            torch.cat(chosen), torch.cat(rejected), torch.cat(ref_chosen), torch.cat(ref_rejected),
            beta=self.spec.dpo.beta,
        )
        metrics = result.metrics()
        metrics["loss"] = float(result.loss)
        metrics["policy_logp_margin"] = float((torch.cat(chosen) - torch.cat(rejected)).mean())
        return metrics

    # --- weights --------------------------------------------------------------------------------------

    def policy_state_dict(self) -> dict[str, torch.Tensor]:
        """Full (unpartitioned) policy weights on the CPU."""
        if self.spec.deepspeed.zero_stage == 3:
            deepspeed = import_deepspeed()
            params = list(self.module.parameters())
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
        return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}

    def sync_ref(self) -> None:
        self.ref.load_state_dict(self.policy_state_dict())
        self.ref_synced_at = self.step
        log.info("reference model re-synced to the policy at step %d", self.step)

    def save_policy(self, directory: Path) -> None:
        """HF checkpoint (config + safetensors) of the current policy."""
        self.module.save_pretrained(directory, state_dict=self.policy_state_dict())

    # --- trainer state ----------------------------------------------------------------------------------

    def state(self) -> dict[str, int]:
        return {"step": self.step, "updates": self.updates, "ref_synced_at": self.ref_synced_at}

    def save_state(self, directory: Path) -> None:
        """DeepSpeed state (weights, optimizer, scheduler) and the reference weights into `directory`."""
        from safetensors.torch import save_model

        self.engine.save_checkpoint(str(directory / DS_CHECKPOINT_DIR), tag=DS_CHECKPOINT_TAG)
        save_model(self.ref, str(directory / REF_WEIGHTS))

    def load_state(self, directory: Path, state: dict[str, Any]) -> None:
        from safetensors.torch import load_model

        path, _ = self.engine.load_checkpoint(
            str(directory / DS_CHECKPOINT_DIR), tag=DS_CHECKPOINT_TAG,
            load_optimizer_states=True, load_lr_scheduler_states=True,
        )
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint under {directory / DS_CHECKPOINT_DIR}")
        load_model(self.ref, str(directory / REF_WEIGHTS), device=str(self.device))
        self.step = int(state["step"])
        self.updates = int(state.get("updates", self.step))
        self.ref_synced_at = int(state.get("ref_synced_at", 0))

    def close(self) -> None:
        if hasattr(self.engine, "destroy"):
            self.engine.destroy()
        del self.engine, self.ref
