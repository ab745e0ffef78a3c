"""The training engine: an HF causal LM under DeepSpeed (ZeRO 0–3, fp32/bf16/fp16), one or many ranks, plus the
frozen reference model an objective may need. Generic: what a step's examples are and their loss come from an
objective (`trainer/objectives.py`).

One `train_step` = one optimizer step on every rank. The step's examples are sharded over the ranks
(`examples[rank::world]`); each rank runs the same number of micro batches (a rank short of examples runs a
zero-weight one), because under ZeRO-2/3 every forward and backward enters collectives that all ranks must
join. DeepSpeed runs with `managed_gradient_accumulation: false`: `backward()` only accumulates and `step()` is
the boundary (reduction, clipping, the AdamW update), however many micro batches came before it. DeepSpeed
averages gradients over the ranks, so each micro batch backpropagates
    loss_sum · world_size / normalizer
with the objective's global normalizer (the same number on every rank): the N-rank step equals the 1-rank step on
the same batch.

Memory at 8B (docs/architecture.md, "paper scale"): `model.dtype: bfloat16` turns on DeepSpeed's bf16 mode (bf16
weights and activations, fp32 master weights and Adam state in the optimizer); ZeRO-3 partitions all of it and the
policy is loaded partitioned (zero.Init through transformers' HfDeepSpeedConfig), and so is the reference model
(an optimizer-less ZeRO-3 engine), so no rank ever holds a full copy of either. Activation checkpointing comes
from `train.gradient_checkpointing`.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from semirl.core.files import share_readable
from semirl.core.weight_transfer import ParamSpec, plan_buckets
from semirl.spec import RunSpec
from semirl.trainer.distributed import RankGroup, import_deepspeed, join_trainer_group
from semirl.trainer.logprobs import SeqBatch, build_batch, sequence_logps
from semirl.trainer.objectives import Objective, StepExamples, objective_for

log = logging.getLogger(__name__)

DS_CHECKPOINT_DIR = "deepspeed"
STATE_FILE = "trainer_state.json"  # beside the DeepSpeed state: what the run loop needs to resume
DS_CHECKPOINT_TAG = "state"
REFERENCE_DIR = "reference"          # reference weights, written only when they are neither the seed nor the policy
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class EngineGuardError(RuntimeError):
    """DeepSpeed does not behave as the engine relies on (e.g. step() is not the accumulation boundary)."""


def deepspeed_config(spec: RunSpec, world_size: int) -> dict[str, Any]:
    micro = spec.train.micro_batch_pairs
    gas = max(1, math.ceil(spec.train.batch_prompts / (micro * world_size)))
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": gas,  # nominal; the real boundary is each step() call (module docstring)
        "train_batch_size": micro * gas * world_size,
        "managed_gradient_accumulation": False,
        "gradient_clipping": spec.optim.grad_clip,
        "zero_optimization": {
            "stage": spec.deepspeed.zero_stage,
            "overlap_comm": False,
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    hpz = spec.deepspeed.zero_hpz_partition_size
    if hpz > 1:
        if world_size % hpz:
            raise ValueError(f"deepspeed.zero_hpz_partition_size {hpz} does not divide the trainer's {world_size} "
                             "ranks: set it to the GPUs per trainer pod")
        config["zero_optimization"]["zero_hpz_partition_size"] = hpz
    if spec.model.dtype == "bfloat16":
        config["bf16"] = {"enabled": True}
    elif spec.model.dtype == "float16":
        config["fp16"] = {"enabled": True, "initial_scale_power": 16}
    return config


def reference_config(spec: RunSpec, world_size: int) -> dict[str, Any]:
    """An optimizer-less ZeRO-3 engine for the reference model: partitioned like the policy, never stepped."""
    config = deepspeed_config(spec, world_size)
    config.pop("gradient_clipping")
    hpz = config["zero_optimization"].get("zero_hpz_partition_size")
    config["zero_optimization"] = {"stage": 3, "overlap_comm": False}
    if hpz:
        config["zero_optimization"]["zero_hpz_partition_size"] = hpz
    return config


def _load_model(path: str, dtype: torch.dtype, ds_config: dict[str, Any] | None) -> torch.nn.Module:
    """`from_pretrained`; with a ZeRO-3 `ds_config` the weights are partitioned while loading (zero.Init)."""
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    keep_alive = HfDeepSpeedConfig(ds_config) if ds_config is not None else None
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    finally:
        if keep_alive is not None:
            unset_hf_deepspeed_config()


class TrainingEngine:
    """The policy (a DeepSpeed engine) and, when the objective needs one, a frozen reference model."""

    def __init__(
        self, spec: RunSpec, model_path: str | Path | None = None, *, ranks: RankGroup | None = None,
        objective: Objective | None = None, reference_path: str | Path | None = None,
    ) -> None:
        deepspeed = import_deepspeed()
        self.ranks = ranks or join_trainer_group()
        self.spec = spec
        self.objective = objective or objective_for(spec)
        self.model_path = str(model_path or spec.model.path)
        self.dtype = TORCH_DTYPES[spec.model.dtype]
        self.zero3 = spec.deepspeed.zero_stage == 3
        world = self.ranks.world_size
        config = deepspeed_config(spec, world)
        torch.manual_seed(spec.train.seed)
        policy = _load_model(self.model_path, self.dtype, config if self.zero3 else None)
        policy.config.use_cache = False
        if spec.train.gradient_checkpointing:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        optim = spec.optim
        optimizer = torch.optim.AdamW(
            [p for p in policy.parameters() if p.requires_grad], lr=optim.lr, betas=tuple(optim.betas),
            eps=optim.adam_eps, weight_decay=optim.weight_decay,
        )
        scheduler = None
        if optim.warmup_steps:
            warmup = optim.warmup_steps
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        self.engine, _, _, _ = deepspeed.initialize(
            model=policy, optimizer=optimizer, lr_scheduler=scheduler, config=config
        )
        self._check_unmanaged_accumulation()
        self.device = self.engine.device
        self.ref: Any = None
        if self.objective.needs_reference:
            self.ref = self._build_reference(str(reference_path or self.model_path))
        pad = policy.config.pad_token_id if policy.config.pad_token_id is not None else policy.config.eos_token_id
        self.pad_token_id = int((pad[0] if isinstance(pad, list) else pad) or 0)
        self.step = 0            # optimizer steps taken in the run, counting steps with no examples
        self.updates = 0         # steps that actually changed the weights
        self.ref_synced_at = 0   # step at which the reference was last set to the policy (0 = the seed)

    def _build_reference(self, path: str) -> Any:
        if self.zero3:
            deepspeed = import_deepspeed()
            config = reference_config(self.spec, self.ranks.world_size)
            model = _load_model(path, self.dtype, config)
            engine, _, _, _ = deepspeed.initialize(model=model, config=config)
            engine.eval()
            engine.module.requires_grad_(False)
            return engine
        model = _load_model(path, self.dtype, None)
        model.eval().requires_grad_(False)
        return model.to(self.device)

    def _check_unmanaged_accumulation(self) -> None:
        """The engine relies on step() being the accumulation boundary; a DeepSpeed that ignored the config key
        would silently step every `gradient_accumulation_steps` micro batches instead."""
        managed = getattr(self.engine, "managed_gradient_accumulation", None)
        if managed is None or managed():
            raise EngineGuardError(
                "this DeepSpeed does not honour managed_gradient_accumulation=false (needs deepspeed>=0.19.8,<0.20)")

    # --- training -------------------------------------------------------------------------------------

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    def _batch(self, chunk: Sequence[Any]) -> SeqBatch:
        batch = build_batch(self.objective.sequences(chunk), self.pad_token_id)
        return SeqBatch(*(t.to(self.device) for t in (batch.input_ids, batch.attention_mask, batch.response_mask)))

    def micro_batches(self, examples: Sequence[Any]) -> list[tuple[Sequence[Any], float]]:
        """This rank's micro batches as (examples, weight): the same count on every rank (module docstring)."""
        micro = self.objective.micro_batch_examples
        world, rank = self.ranks.world_size, self.ranks.rank
        shard = list(examples[rank::world])
        count = math.ceil(math.ceil(len(examples) / world) / micro)
        batches: list[tuple[Sequence[Any], float]] = []
        for index in range(count):
            chunk = shard[index * micro : (index + 1) * micro]
            batches.append((chunk, 1.0) if chunk else (examples[:1], 0.0))
        return batches

    def _clock(self) -> float:
        """Seconds, after the device has finished what was queued (CUDA runs asynchronously)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def train_step(self, batch: StepExamples) -> dict[str, float]:
        """One optimizer step on `batch` (no examples: no update, but the step still counts). Besides the
        objective's metrics: this rank's seconds in reference forwards, policy forward + backward, and the
        optimizer step (`time_reference_s`, `time_forward_backward_s`, `time_optimizer_s`)."""
        sums = dict.fromkeys(self.objective.metric_names, 0.0)
        maxima = dict.fromkeys(self.objective.max_metric_names, 0.0)
        times = dict.fromkeys(("time_reference_s", "time_forward_backward_s", "time_optimizer_s"), 0.0)
        total = len(batch.examples)
        overflow = False
        if total:
            self.engine.train()
            scale = self.ranks.world_size / self.objective.normalizer(batch)
            for chunk, weight in self.micro_batches(batch.examples):
                started = self._clock()
                sequences = self._batch(chunk)
                reference = None
                if self.ref is not None:
                    with torch.no_grad():
                        reference = sequence_logps(self.ref, sequences)
                forward = self._clock()
                times["time_reference_s"] += forward - started
                policy = sequence_logps(self.engine, sequences, entropy_grad=self.objective.entropy_grad)
                result = self.objective.loss(chunk, policy, reference)
                self.engine.backward(result.loss_sum * (scale * weight), scale_wrt_gas=False)
                times["time_forward_backward_s"] += self._clock() - forward
                if weight:
                    for key, value in result.sums.items():
                        sums[key] += value
                    for key, value in result.maxima.items():
                        maxima[key] = max(maxima[key], value)
            before, skipped_before = self.engine.global_steps, self.engine.skipped_steps
            started = self._clock()
            self.engine.step()  # the accumulation boundary: reduce, clip, AdamW (and LR schedule) once
            times["time_optimizer_s"] = self._clock() - started
            if self.engine.global_steps != before + 1:
                raise EngineGuardError(f"DeepSpeed did not step at step() ({before} -> {self.engine.global_steps})")
            overflow = self.engine.skipped_steps != skipped_before  # fp16 loss scaling skipped the update
            if not overflow:
                self.updates += 1
            sums = self._reduce_over_ranks(sums, torch.distributed.ReduceOp.SUM)
            maxima = self._reduce_over_ranks(maxima, torch.distributed.ReduceOp.MAX)
        self.step += 1
        metrics = {key: value / total if total else 0.0 for key, value in sums.items()}
        metrics.update(maxima)
        grad_norm = self.engine.get_global_grad_norm() if total else None
        metrics["grad_norm"] = float(grad_norm) if grad_norm is not None else 0.0
        metrics["lr"] = float(self.engine.get_lr()[0])
        metrics["update_skipped"] = 1.0 if total and overflow else 0.0
        metrics.update(times)
        interval = self.spec.ref_sync_interval
        if interval and self.step % interval == 0 and self.ref is not None:
            self.sync_ref()
        return metrics

    def _reduce_over_ranks(self, values: dict[str, float], op: Any) -> dict[str, float]:
        if self.ranks.world_size == 1 or not values:
            return values
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        torch.distributed.all_reduce(tensor, op=op, group=self.ranks.control)
        return dict(zip(keys, tensor.tolist(), strict=True))

    # --- weights --------------------------------------------------------------------------------------

    def _each_parameter(self, module: torch.nn.Module, body: Callable[[str, torch.nn.Parameter], None],
                        *, modify: bool) -> None:
        """Call `body(name, param)` with each parameter whole; under ZeRO-3 one gathered parameter at a time
        (bounded memory at 8B), and with `modify` rank 0's change is what every rank keeps."""
        if not self.zero3:
            for name, param in module.named_parameters():
                body(name, param)
            return
        deepspeed = import_deepspeed()
        for name, param in module.named_parameters():
            with deepspeed.zero.GatheredParameters([param], modifier_rank=0 if modify else None):
                body(name, param)

    @torch.no_grad()
    def sync_ref(self) -> None:
        """Set the reference model to the policy (collective under ZeRO-3)."""
        reference = self.ref.module if self.zero3 else self.ref
        policy = dict(self.module.named_parameters())
        deepspeed = import_deepspeed() if self.zero3 else None

        def copy(name: str, param: torch.nn.Parameter) -> None:
            if deepspeed is None:
                param.data.copy_(policy[name].data)
                return
            with deepspeed.zero.GatheredParameters([policy[name]], modifier_rank=None):
                if self.ranks.is_driver:
                    param.data.copy_(policy[name].data)

        self._each_parameter(reference, copy, modify=True)
        self.ref_synced_at = self.step
        log.info("reference model re-synced to the policy at step %d", self.step)

    def policy_plan(self, bucket_bytes: int) -> list[list[ParamSpec]]:
        """The transfer buckets of the policy's parameters (the same on every rank: full shapes, in order)."""
        params = [(name, tuple(getattr(param, "ds_shape", param.shape)), param.dtype)
                  for name, param in self.module.named_parameters()]
        return plan_buckets(params, bucket_bytes)

    @torch.no_grad()
    def send_policy(self, plan: list[list[ParamSpec]], send: Callable[[list[ParamSpec], dict[str, torch.Tensor]], None]
                    ) -> None:
        """Gather the policy a bucket at a time (collective under ZeRO-3: every rank holds one bucket's full
        tensors at once, never the model) and call `send(bucket, tensors)` on rank 0 with each."""
        params = dict(self.module.named_parameters())
        deepspeed = import_deepspeed() if self.zero3 else None
        for bucket in plan:
            tensors = [params[spec.name] for spec in bucket]
            if deepspeed is None:
                send(bucket, {spec.name: t for spec, t in zip(bucket, tensors, strict=True)})
                continue
            with deepspeed.zero.GatheredParameters(tensors, modifier_rank=None):
                if self.ranks.is_driver:
                    send(bucket, {spec.name: t for spec, t in zip(bucket, tensors, strict=True)})

    def policy_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The full policy weights in the model dtype on rank 0's CPU (None on other ranks); collective at ZeRO-3."""
        return self._full_state_dict(self.engine)

    def reference_state_dict(self) -> dict[str, torch.Tensor] | None:
        return self._full_state_dict(self.ref)

    def _full_state_dict(self, model: Any) -> dict[str, torch.Tensor] | None:
        if self.zero3:  # gathered one layer at a time onto rank 0's CPU
            state = model._zero3_consolidated_16bit_state_dict()
            return {k: v.detach().cpu() for k, v in state.items()} if self.ranks.is_driver else None
        if not self.ranks.is_driver:
            return None
        module = getattr(model, "module", model)
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    def write_policy(self, directory: Path, state_dict: dict[str, torch.Tensor]) -> None:
        """HF checkpoint (config + safetensors, in the model dtype) of gathered weights; rank 0 only. Readable by
        other users (a generator or an evaluation job under another uid), as any file it writes otherwise is."""
        self.module.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)
        share_readable(directory)

    # --- trainer state ----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"step": self.step, "updates": self.updates, "ref_synced_at": self.ref_synced_at,
                "reference": self._reference_source(), "world_size": self.ranks.world_size}

    def _reference_source(self) -> str:
        """Where a resume finds the reference weights: the seed, the policy itself, or a saved copy."""
        if self.ref is None or self.ref_synced_at == 0:
            return "seed"
        return "policy" if self.ref_synced_at == self.step else "saved"

    def save_state(self, directory: Path) -> None:
        """DeepSpeed state (each rank its shards) and, only when needed, the reference weights. Collective."""
        self.engine.save_checkpoint(str(directory / DS_CHECKPOINT_DIR), tag=DS_CHECKPOINT_TAG)
        if self._reference_source() == "saved":
            state = self.reference_state_dict()
            if state is not None:
                self.module.save_pretrained(directory / REFERENCE_DIR, state_dict=state, safe_serialization=True)
        self.ranks.barrier()

    def load_state(self, directory: Path, state: dict[str, Any]) -> None:
        path, _ = self.engine.load_checkpoint(
            str(directory / DS_CHECKPOINT_DIR), tag=DS_CHECKPOINT_TAG,
            load_optimizer_states=True, load_lr_scheduler_states=True,
        )
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint under {directory / DS_CHECKPOINT_DIR}")
        self.step = int(state["step"])
        self.updates = int(state.get("updates", self.step))
        source = state.get("reference", "seed")
        if self.ref is not None and source == "policy":
            self.sync_ref()
        elif self.ref is not None and source == "saved":
            self._load_reference(directory / REFERENCE_DIR)
        self.ref_synced_at = int(state.get("ref_synced_at", 0))

    @torch.no_grad()
    def _load_reference(self, directory: Path) -> None:
        from safetensors import safe_open

        files = sorted(directory.glob("*.safetensors"))
        if not files:
            raise RuntimeError(f"no reference weights under {directory}")
        handles = [safe_open(str(f), framework="pt") for f in files]
        where = {key: handle for handle in handles for key in handle.keys()}  # noqa: SIM118 - safe_open API

        def load(name: str, param: torch.nn.Parameter) -> None:
            if not self.zero3 or self.ranks.is_driver:
                param.data.copy_(where[name].get_tensor(name).to(param.dtype))

        self._each_parameter(self.ref.module if self.zero3 else self.ref, load, modify=True)

    def close(self) -> None:
        for engine in (self.engine, self.ref):
            if hasattr(engine, "destroy"):
                engine.destroy()
        del self.engine, self.ref
        # ZeRO-3's hooks hold reference cycles: free the engine now, before the next run (or attempt) loads
        # another 8B policy and reference on the same GPUs.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def load_trainer_state(engine: TrainingEngine, directory: Path) -> dict[str, Any]:
    """Restore `engine` from a trainer checkpoint directory (rank 0 verified its manifest before)."""
    state = json.loads((directory / STATE_FILE).read_text())
    engine.load_state(directory, state)
    return state
