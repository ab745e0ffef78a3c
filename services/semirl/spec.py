"""RunSpec: the one schema of a run.

A run spec is what a user POSTs to the controller (JSON or YAML). Every service reads its settings from it;
nothing else defines a run. Sections are named after the concept they configure so that GRPO, reward
models, mixed tasks and evaluation extend it without renaming anything.

Path checks (the model exists, nothing escapes the checkpoint store) run only when validation is given the
context ``{"check_paths": True}`` — the controller does that at submission; services that later read the
stored spec do not re-check.

Every number is finite (inf and NaN are rejected: a stored record holding one would not load again) and every
size has an upper bound far above any real run, so one request cannot make the controller's work, memory or
validation time unbounded; the bounds are the MAX_* constants below and are stated in the field descriptions.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

SAFE_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$"

MAX_STEPS = 10_000_000          # train.steps and every step count or cadence (sync, eval, checkpoint, warmup)
MAX_BATCH = 100_000             # train.batch_prompts, train.micro_batch_pairs
MAX_TOKENS = 1_048_576          # model.max_model_len, sampling.max_tokens, eval.max_tokens
MAX_ROWS = 100_000_000          # data.*.limit, eval.limit
MAX_EVAL_SETS = 100             # entries of data.eval
MAX_EVAL_ROUNDS = 10_000        # evaluations in one run (train.steps / eval.every)
MAX_WINDOW_PROMPTS = 1_000_000  # prompts released at once: batch_prompts x steps per sync window
MAX_SEED = 2**32 - 1            # numpy's and torch's seed range, both satisfied
MAX_PATH = 4096
MAX_TEMPLATE = 65_536


RewardSourceName = Literal["verifier", "reward_model"]  # core/rewards.py maps these to the wire's enum
AnswerFormatName = Literal["latex", "boxed"]            # core/wire.py: AnswerFormat
PromptFormatName = Literal["chat", "raw"]               # core/wire.py: PromptFormat


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _is_file(path: Path) -> bool:
    """Path.is_file, with a name the OS refuses (a component too long, a NUL byte) counting as no file."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def field_error(model: str, loc: tuple[str, ...], value: Any, message: str) -> ValidationError:
    """A cross-field rule's error located at the field it names (a model validator's own would have no loc)."""
    error = PydanticCustomError("value_error", "{message}", {"message": message})
    return ValidationError.from_exception_data(model, [InitErrorDetails(type=error, loc=loc, input=value)])


def _checking_paths(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("check_paths"))


class ModelSpec(_Section):
    path: str = Field(
        max_length=MAX_PATH, description="Seed policy: a directory holding an HF causal-LM checkpoint and tokenizer."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Generation, training (DeepSpeed bf16/fp16 with fp32 master weights) and the dtype policy "
        "checkpoints are written in.",
    )
    max_model_len: int = Field(
        512, gt=0, le=MAX_TOKENS, description=f"Context length the generators allocate for (at most {MAX_TOKENS:,})."
    )

    @field_validator("path")
    @classmethod
    def _model_exists(cls, value: str, info: ValidationInfo) -> str:
        if _checking_paths(info):
            path = Path(value)
            if not _is_file(path / "config.json"):
                raise ValueError(f"model directory {value!r} does not exist or has no config.json")
        return value


class DatasetSpec(_Section):
    path: str = Field(
        max_length=MAX_PATH, description="JSONL file of problems: fields `problem` (or `question`) and `answer`."
    )
    problem_field: str = Field("problem", max_length=256)
    answer_field: str = Field("answer", max_length=256)
    limit: int | None = Field(
        None, gt=0, le=MAX_ROWS, description=f"Use at most this many rows (at most {MAX_ROWS:,})."
    )
    format: Literal["problems", "preferences"] = Field(
        "problems",
        description="'problems': rows of a problem and its answer, sampled by the generators and scored; "
        "'preferences' (data.train of an offline DPO run only): rows of a prompt, a chosen and a rejected "
        "response, trained on as they are, with no generation (docs/architecture.md).",
    )
    prompt_field: str = Field("prompt", max_length=256, description="Preferences: the prompt's field (text or "
                              "messages; when absent, the conversation before the chosen response).")
    chosen_field: str = Field("chosen", max_length=256, description="Preferences: text or messages ending with "
                              "the assistant's turn.")
    rejected_field: str = Field("rejected", max_length=256)
    reward_source: RewardSourceName = Field(
        "verifier",
        description="Who scores this set's samples: the verifier (math-verify against `answer`) or the reward "
        "model (no answer needed). A row's own `reward_source` field overrides it (mixed tasks in one set).",
    )
    answer_format: AnswerFormatName = Field(
        "latex",
        description="How the verifier reads a response's answer: 'latex' = the paper's math-verify config (the "
        "last boxed or otherwise LaTeX-delimited answer, e.g. 'The final answer is $\\frac{1}{2}$'); "
        "'boxed' = only a \\boxed{} answer counts.",
    )
    name: str | None = Field(
        None, pattern=SAFE_NAME, description="Evaluation sets: the name results are reported under (default: the "
        "file name without its extension).",
    )
    samples_per_prompt: int | None = Field(
        None, gt=0, le=256,
        description="Evaluation sets: samples per prompt for pass@1, 1..256 (default eval.samples_per_prompt).",
    )

    @field_validator("path")
    @classmethod
    def _dataset_exists(cls, value: str, info: ValidationInfo) -> str:
        if _checking_paths(info) and not _is_file(Path(value)):
            raise ValueError(f"dataset file {value!r} does not exist")
        return value


class DataSpec(_Section):
    train: DatasetSpec
    eval: list[DatasetSpec] = Field(
        default_factory=list,
        max_length=MAX_EVAL_SETS,
        description=f"Held-out evaluation sets, each reported on its own (one mapping or a list of at most "
        f"{MAX_EVAL_SETS}).",
    )
    prompt_template: str = Field(
        "{problem}",
        max_length=MAX_TEMPLATE,
        description="Prompt text; every `{problem}` is replaced by the row's problem (other braces stay as written).",
    )
    prompt_format: PromptFormatName = Field(
        "chat",
        description="'chat': the prompt text is the user turn of the model tokenizer's chat template (with the "
        "generation prompt) and goes to the generator as token ids; 'raw': the text is tokenized as it is.",
    )
    shuffle_seed: int = Field(0, ge=0, le=MAX_SEED, description=f"Seed of the prompt order (0..{MAX_SEED:,}).")

    @field_validator("eval", mode="before")
    @classmethod
    def _eval_sets_as_list(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, dict | DatasetSpec) else value

    @field_validator("eval")
    @classmethod
    def _eval_sets_named_once(cls, value: list[DatasetSpec]) -> list[DatasetSpec]:
        named = [dataset if dataset.name else dataset.model_copy(update={"name": eval_set_name(dataset.path)})
                 for dataset in value]
        counts = Counter(dataset.name for dataset in named)
        duplicates = sorted(str(name) for name, count in counts.items() if count > 1)
        if duplicates:
            raise ValueError(f"evaluation set names must be unique (give each a `name`): {duplicates}")
        return named

    @field_validator("prompt_template")
    @classmethod
    def _template_has_problem(cls, value: str) -> str:
        if "{problem}" not in value:
            raise ValueError("prompt_template must contain {problem}")
        return value


class SamplingSpec(_Section):
    n: int = Field(8, ge=2, le=256, description="Samples per prompt, 2..256 (DPO needs at least 2 to form a pair).")
    temperature: float = Field(1.0, ge=0.0, le=10.0, description="0..10.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, gt=0, le=MAX_TOKENS, description=f"Response length cap (at most {MAX_TOKENS:,}).")
    seeded: bool = Field(False, description=(
        "Give every training prompt its own sampling seed (derived from train.seed): its samples no longer depend "
        "on how prompts are batched, at ~10% of vLLM's throughput. Evaluation prompts are always seeded."))


class SyncSpec(_Section):
    interval: int | Literal["offline"] = Field(
        1, description=f"s: sync the generators every s trainer steps (1..{MAX_STEPS:,}); 1 = online, "
        "'offline' = never.",
    )
    ref_interval: int | Literal["never"] | None = Field(
        None, description=f"Re-sync the DPO reference model every k steps (1..{MAX_STEPS:,}); default s for DPO, "
        "never for GRPO.",
    )
    transport: Literal["broadcast", "storage"] = Field(
        "broadcast",
        description="How a new policy version reaches the generators: 'broadcast' sends it in memory from the "
        "trainer (NCCL on GPUs, gloo on CPU) and writes its export to the store after the commit; 'storage' writes "
        "the export first and the generators load it. A generator that cannot join a broadcast loads the export.",
    )
    max_staleness: int | None = Field(
        None, ge=0, le=MAX_STEPS,
        description="Asynchronous training: generators never wait for a window. Trainer step t accepts a group "
        "sampled by any committed version at most k syncs older than v(t) (k x s steps); the controller releases a "
        "window as soon as that holds for its first step, so at most k + 1 windows of prompts are out at once. "
        "Omitted: strict windows (step t trains on v(t) only). k = 0 with s = 1 is online.",
    )

    @field_validator("interval")
    @classmethod
    def _positive_interval(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= MAX_STEPS:
            raise ValueError(f"sync.interval must be 1..{MAX_STEPS:,} or 'offline'")
        return value

    @field_validator("ref_interval")
    @classmethod
    def _positive_ref_interval(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 1 <= value <= MAX_STEPS:
            raise ValueError(f"sync.ref_interval must be 1..{MAX_STEPS:,}, 'never' or omitted")
        return value

    @model_validator(mode="after")
    def _staleness_needs_syncs(self) -> SyncSpec:
        if self.max_staleness is not None and self.offline:
            raise field_error("SyncSpec", ("max_staleness",), self.max_staleness,
                              "sync.max_staleness bounds how far behind the synced policy a group may be; an "
                              "'offline' run never syncs: omit max_staleness or give sync.interval a number")
        return self

    @property
    def offline(self) -> bool:
        return self.interval == "offline"

    @property
    def asynchronous(self) -> bool:
        return self.max_staleness is not None


class TrainSpec(_Section):
    steps: int = Field(gt=0, le=MAX_STEPS, description=f"Optimizer steps in the run (at most {MAX_STEPS:,}).")
    batch_prompts: int = Field(
        64, gt=0, le=MAX_BATCH, description=f"Prompts (scored groups) per optimizer step (at most {MAX_BATCH:,}); "
        f"batch_prompts x the steps of one sync window (all steps when offline) is at most {MAX_WINDOW_PROMPTS:,}, "
        "the prompts the controller releases at once.",
    )
    micro_batch_pairs: int = Field(
        8, gt=0, le=MAX_BATCH,
        description=f"DPO pairs (GRPO: twice as many samples) per forward pass on each rank; the rest is "
        f"accumulated (at most {MAX_BATCH:,}).",
    )
    gradient_checkpointing: bool = Field(
        False, description="Activation checkpointing: recompute each layer's activations in the backward pass."
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description=f"Seed of the trainer's randomness (0..{MAX_SEED:,}).")


class OptimSpec(_Section):
    lr: float = Field(1e-6, gt=0, description="Learning rate (finite, like every number in the spec).")
    adam_eps: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = Field((0.9, 0.95), description="Adam's (beta1, beta2), each in [0, 1).")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(0.1, gt=0)
    warmup_steps: int = Field(0, ge=0, le=MAX_STEPS, description=f"Linear warmup steps (at most {MAX_STEPS:,}).")

    @field_validator("betas")
    @classmethod
    def _betas_below_one(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= beta < 1.0 for beta in value):
            raise ValueError("each of optim.betas must be in [0, 1)")
        return value


class DPOSpec(_Section):
    beta: float = Field(0.1, gt=0)
    loss_normalizer: Literal["prompts", "pairs"] = Field(
        "prompts",
        description="Divide the step's summed pair losses by its prompts (the paper's fairseq2 recipe: skipped "
        "prompts count, so a step with few pairs moves the policy less) or by its pairs (TRL's mean).",
    )
    pair_rule: Literal["random", "group"] = Field(
        "random",
        description="'random': one pair per prompt, a random correct x a random wrong sample (the paper's DPO); "
        "'group': GroupDPO (paper §4.2), every correct x every wrong sample, the prompt's pair losses averaged.",
    )
    nll_coef: float = Field(0.0, ge=0, description="Weight of an NLL term on the chosen response.")
    length_normalize: bool = False
    entropy_coef: float = Field(
        0.0, ge=0, description="Entropy regularizer: subtract coef x the chosen response's mean token entropy.")


class GRPOSpec(_Section):
    kl_beta: float = Field(
        0.001, ge=0, description="Weight of the per-token k3 KL to the fixed reference (the paper: 0.001; 0 = no "
        "reference model at all).")
    std_normalize: bool = Field(
        False, description="Divide each group's advantages by the std of its rewards (fairseq2, DeepSeekMath); off "
        "as in Dr. GRPO, because it up-weights nearly solved and nearly hopeless prompts.")
    length_normalize: bool = Field(
        False, description="Average each response's token losses instead of summing them (off: Dr. GRPO).")
    clip_eps: float = Field(
        0.2, gt=0, lt=1, description="Off-policy steps: PPO's clip range for the per-token importance ratio.")
    off_policy_loss: Literal["ppo_clip", "truncated_is"] = Field(
        "ppo_clip", description="Off-policy steps (sync.interval > 1 or sync.max_staleness > 0): PPO's clipped "
        "ratio against the generator's logprobs, or truncated importance sampling (weight min(ratio, is_cap)).")
    is_cap: float = Field(2.0, ge=1, le=1000, description="truncated_is: the largest importance weight.")


class RewardModelSpec(_Section):
    """The reward model a run's reward-model tasks need. On Kubernetes the chart's reward service serves it
    (`reward.model`); `semirl demo` / `semirl up` start a local reward service from this section."""

    path: str = Field(max_length=MAX_PATH, description="HF sequence-classification checkpoint with one label.")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_length: int = Field(4096, gt=0, le=MAX_TOKENS, description="Tokens the model reads; longer inputs lose "
                            "the prompt's left (counted).")
    score_token: str | None = Field(None, max_length=256, description="A token appended to every input whose "
                                    "output is the score (Athene-RM-8B: <|reserved_special_token_1|>); default: "
                                    "the last token.")
    prompt_format: Literal["chat", "raw"] = "chat"


class DeepSpeedSpec(_Section):
    zero_stage: Literal[0, 1, 2, 3] = 1
    zero_hpz_partition_size: int = Field(
        1, ge=1, le=1024,
        description="ZeRO++ hierarchical partitioning (zero_stage 3 only): a second copy of the weights sharded "
        "over groups of this many ranks, so the forward and backward all-gathers stay inside a node; set it to the "
        "GPUs per trainer pod on a multi-node job (it must divide the world size). 1 = off.",
    )

    @model_validator(mode="after")
    def _hpz_is_zero3(self) -> DeepSpeedSpec:
        if self.zero_hpz_partition_size > 1 and self.zero_stage != 3:
            raise field_error("DeepSpeedSpec", ("zero_hpz_partition_size",), self.zero_hpz_partition_size,
                              "zero_hpz_partition_size > 1 is ZeRO++ hierarchical partitioning of ZeRO-3: set "
                              "zero_stage to 3")
        return self


# Broadcast's durable cadence: at 8B a trainer-state write is ~96 GB, ~50 s at 2 GB/s, under 5% of 20 steps of a
# minute or more (docs/architecture.md, weight transfer).
DEFAULT_DURABLE_STEPS = 20


class CheckpointSpec(_Section):
    keep: int = Field(
        3, ge=1, le=MAX_STEPS,
        description=f"Committed policy versions to keep (plus any still referenced; at most {MAX_STEPS:,}).",
    )
    every: int | None = Field(
        None, gt=0, le=MAX_STEPS,
        description="Durable checkpoints (the trainer state a killed trainer resumes from) every N steps, a multiple "
        f"of sync.interval (at most {MAX_STEPS:,}). Default: every sync with sync.transport 'storage'; with "
        f"'broadcast', the first multiple of sync.interval from {DEFAULT_DURABLE_STEPS}; offline, train.steps / 4.",
    )
    subdir: str | None = Field(
        None, max_length=MAX_PATH,
        description="Directory for this run inside the checkpoint store: new or empty, and no other run's (nor "
        "inside one); default runs/<run_id>.",
    )

    @field_validator("subdir")
    @classmethod
    def _inside_store(cls, value: str | None) -> str | None:
        if value is None:
            return value
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or value.strip() == "":
            raise ValueError("checkpoint.subdir must be a relative path inside the checkpoint store (no '..')")
        return value


class BestBySpec(_Section):
    eval_set: str | None = Field(None, pattern=SAFE_NAME, description="Evaluation set whose result decides "
                                 "(default: the first of data.eval).")
    metric: Literal["accuracy", "mean_score", "mean_score_per_token"] = Field(
        "accuracy", description="accuracy (pass@1); for reward-model sets mean_score, or mean_score_per_token (the "
        "paper's choice: its reward model favours long answers).")


class EvalSpec(_Section):
    every: int | None = Field(
        None, gt=0, le=MAX_STEPS,
        description=f"Evaluate every k trainer steps (start and end always); at most {MAX_EVAL_ROUNDS:,} "
        "evaluations in a run (train.steps / k).",
    )
    samples_per_prompt: int = Field(4, gt=0, le=64, description="pass@1 is averaged over this many samples (1..64).")
    temperature: float = Field(0.6, ge=0.0, le=10.0, description="0..10.")
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    max_tokens: int | None = Field(
        None, gt=0, le=MAX_TOKENS, description=f"Default: sampling.max_tokens (at most {MAX_TOKENS:,})."
    )
    limit: int | None = Field(
        None, gt=0, le=MAX_ROWS, description=f"Evaluate on at most this many held-out prompts (at most {MAX_ROWS:,})."
    )
    best_by: BestBySpec | None = Field(
        None, description="Record the best evaluated checkpoint by this criterion and export it to the run's best/ "
        "directory beside final/ (hard links where the store allows).")


def eval_set_name(path: str) -> str:
    """The default name of an evaluation set: its file name without extension(s), made a safe name."""
    stem = PurePosixPath(path.replace("\\", "/")).name.split(".", 1)[0]
    cleaned = re.sub(r"[^a-zA-Z0-9._-]", "_", stem).lstrip("._-")[:63]
    return cleaned or "eval"


class RunSpec(BaseModel):
    """A run: which model to train, on what, with which algorithm and sync interval."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Annotated[str, Field(pattern=SAFE_NAME, description="Human-readable run name (letters, digits, ._-).")]
    algorithm: Literal["dpo", "grpo"] = "dpo"
    model: ModelSpec
    data: DataSpec
    sampling: SamplingSpec = SamplingSpec()
    sync: SyncSpec = SyncSpec()
    train: TrainSpec
    optim: OptimSpec = OptimSpec()
    dpo: DPOSpec = DPOSpec()
    grpo: GRPOSpec = GRPOSpec()
    deepspeed: DeepSpeedSpec = DeepSpeedSpec()
    reward_model: RewardModelSpec | None = None
    checkpoint: CheckpointSpec = CheckpointSpec()
    eval: EvalSpec = EvalSpec()

    @field_validator("name")
    @classmethod
    def _name_is_one_path_segment(cls, value: str) -> str:
        if ".." in value:
            raise ValueError("name must not contain '..'")
        return value

    @model_validator(mode="after")
    def _best_by_names_an_eval_set(self) -> RunSpec:
        best = self.eval.best_by
        if best is None:
            return self
        names = [dataset.name for dataset in self.data.eval]
        if not names:
            raise field_error("RunSpec", ("eval", "best_by"), None, "eval.best_by needs an evaluation set in data.eval")
        if best.eval_set is not None and best.eval_set not in names:
            raise field_error("RunSpec", ("eval", "best_by", "eval_set"), best.eval_set,
                              f"eval.best_by.eval_set must name a set of data.eval: {names}")
        return self

    @property
    def best_by_set(self) -> str | None:
        best = self.eval.best_by
        if best is None or not self.data.eval:
            return None
        return best.eval_set or self.data.eval[0].name

    @model_validator(mode="after")
    def _preferences_are_offline_dpo(self) -> RunSpec:
        """A static preference set is offline DPO: nothing is generated for training, so nothing is synced."""
        for index, dataset in enumerate(self.data.eval):
            if dataset.format == "preferences":
                raise field_error("RunSpec", ("data", "eval", str(index), "format"), dataset.format,
                                  "evaluation sets are problems scored on samples; format 'preferences' is for "
                                  "data.train")
        if self.data.train.format != "preferences":
            return self
        if self.algorithm != "dpo":
            raise field_error("RunSpec", ("algorithm",), self.algorithm, "data.train format 'preferences' trains "
                              "DPO on the dataset's pairs; algorithm must be 'dpo'")
        if not self.sync.offline:
            raise field_error("RunSpec", ("sync", "interval"), self.sync.interval, "data.train format "
                              "'preferences' is offline DPO (no generation to sync): set sync.interval to 'offline'")
        return self

    @property
    def static_preferences(self) -> bool:
        """Offline DPO on a static preference dataset: the trainer reads its pairs, no generator samples them."""
        return self.data.train.format == "preferences"

    @model_validator(mode="after")
    def _eval_on_committed_versions(self) -> RunSpec:
        """Mid-run evaluations load committed policy versions, so they must fall on checkpoint steps.

        Arithmetic, not a walk over the steps: the mid-run evaluations are the multiples of k = eval.every below
        train.steps, and every one is a multiple of the checkpoint cadence c exactly when k is (or there is none).
        """
        every = self.eval.every
        if every is None or every >= self.train.steps:
            return self
        if every % self._checkpoint_cadence() != 0:
            cadence = "checkpoint.every" if self.sync.offline else "sync.interval"
            raise ValueError(f"eval.every ({every}) must be a multiple of {cadence}: evaluations run on checkpoints")
        if self.data.eval and self.train.steps // every > MAX_EVAL_ROUNDS:
            raise ValueError(f"eval.every ({every}) asks for {self.train.steps // every:,} evaluations; at most "
                             f"{MAX_EVAL_ROUNDS:,} in a run")
        return self

    @model_validator(mode="after")
    def _durable_checkpoints_on_syncs(self) -> RunSpec:
        """A durable checkpoint holds a committed version's trainer state, so it falls on a sync step."""
        every = self.checkpoint.every
        if every is None or self.sync.offline or every % int(self.sync.interval) == 0:  # type: ignore[arg-type]
            return self
        raise field_error("RunSpec", ("checkpoint", "every"), every,
                          f"checkpoint.every ({every}) must be a multiple of sync.interval ({self.sync.interval}): "
                          "durable checkpoints hold a committed version")

    @model_validator(mode="after")
    def _window_released_at_once_bounded(self) -> RunSpec:
        if self.sync.offline:
            steps, window = self.train.steps, "train.steps (offline: one window)"
        else:
            ahead = (self.sync.max_staleness or 0) + 1
            steps = min(int(self.sync.interval) * ahead, self.train.steps)  # type: ignore[arg-type]
            window = "sync.interval x (max_staleness + 1)" if self.sync.asynchronous else "sync.interval"
        prompts = steps * self.train.batch_prompts
        if prompts > MAX_WINDOW_PROMPTS:
            raise ValueError(f"train.batch_prompts x {window} = {prompts:,} prompts released at once; at most "
                             f"{MAX_WINDOW_PROMPTS:,}")
        return self

    # --- derived values: the sync rule lives here and nowhere else -----------------------------------

    @property
    def sync_interval(self) -> float:
        """s as a number: math.inf for offline."""
        return math.inf if self.sync.offline else float(self.sync.interval)  # type: ignore[arg-type]

    def policy_version_for_step(self, step: int) -> int:
        """v(t) = s·⌊(t−1)/s⌋: the policy version whose samples trainer step t (1-based) trains on."""
        if step < 1:
            raise ValueError("steps are 1-based")
        if self.sync.offline:
            return 0
        s = int(self.sync.interval)  # type: ignore[arg-type]
        return s * ((step - 1) // s)

    def window_steps(self, window: int) -> range:
        """Trainer steps of sync window `window` (0-based); offline runs have one window of all steps."""
        if self.sync.offline:
            return range(1, self.train.steps + 1) if window == 0 else range(0)
        s = int(self.sync.interval)  # type: ignore[arg-type]
        start = window * s + 1
        return range(start, min(start + s, self.train.steps + 1))

    @property
    def num_windows(self) -> int:
        if self.sync.offline:
            return 1
        return math.ceil(self.train.steps / int(self.sync.interval))  # type: ignore[arg-type]

    def oldest_accepted_version(self, step: int) -> int:
        """The oldest policy version trainer step t accepts: v(t) with strict windows, v(t) − k·s with
        sync.max_staleness = k (k syncs behind the newest version step t can see), never below the seed."""
        newest = self.policy_version_for_step(step)
        if not self.sync.asynchronous:  # (an offline run cannot be asynchronous: SyncSpec refuses it)
            return newest
        return max(0, newest - int(self.sync.max_staleness or 0) * int(self.sync.interval))  # type: ignore[arg-type]

    def accepts_version(self, step: int, version: int) -> bool:
        """The acceptance rule: may trainer step t train on a group sampled by policy `version`?

        Strict windows: only v(t). Bounded staleness (sync.max_staleness = k): any version from
        `oldest_accepted_version(t)` to v(t). Every consumer asks here, never compares versions itself.
        """
        return self.oldest_accepted_version(step) <= version <= self.policy_version_for_step(step)

    def window_due(self, window: int, committed: int) -> bool:
        """May the controller release window w's prompts once version `committed` is the newest committed one?
        When every version its first step accepts could exist: strict, v(first step) is committed; asynchronous,
        the oldest version that step accepts is."""
        steps = self.window_steps(window)
        if not steps or self.static_preferences:  # a static preference dataset: the trainer reads it itself
            return False
        return self.oldest_accepted_version(steps[0]) <= committed

    def is_checkpoint_step(self, step: int) -> bool:
        """Steps after which the trainer commits a new policy version (each sync, and the last step)."""
        if step == self.train.steps:
            return True
        return step % self._checkpoint_cadence() == 0

    def is_durable_step(self, step: int) -> bool:
        """Commit steps after which the trainer also writes its state (what a restart resumes from) and acks the
        groups trained since the last one; the last step always."""
        return step == self.train.steps or step % self.durable_cadence() == 0

    def durable_cadence(self) -> int:
        if self.sync.offline:
            return self._checkpoint_cadence()
        s = int(self.sync.interval)  # type: ignore[arg-type]
        if self.checkpoint.every is not None:
            return self.checkpoint.every
        if self.sync.transport == "storage":
            return s
        return s * math.ceil(DEFAULT_DURABLE_STEPS / s)

    def _checkpoint_cadence(self) -> int:
        if self.sync.offline:
            return self.checkpoint.every or max(1, self.train.steps // 4)
        return int(self.sync.interval)  # type: ignore[arg-type]

    @property
    def ref_sync_interval(self) -> int | None:
        """Steps between reference-model re-syncs; None = never."""
        ref = self.sync.ref_interval
        if ref == "never" or self.algorithm == "grpo" and ref is None:
            return None
        if ref is None:
            return None if self.sync.offline else int(self.sync.interval)  # type: ignore[arg-type]
        return int(ref)

    @property
    def eval_max_tokens(self) -> int:
        return self.eval.max_tokens or self.sampling.max_tokens

    @property
    def grpo_on_policy(self) -> bool:
        """GRPO trains every group with the policy that sampled it: one update per sync (s = 1) and no staleness.
        Its importance ratio is then exactly 1 and the generator's logprobs are not needed."""
        return self.sync.interval == 1 and not self.sync.max_staleness

    @property
    def sample_logprobs(self) -> bool:
        """Whether the objective reads the generator's logprob of each sampled token (off-policy GRPO's importance
        ratio); DPO and on-policy GRPO recompute every logprob they need, so generators skip them."""
        return self.algorithm == "grpo" and not self.grpo_on_policy

    def eval_steps(self) -> list[int]:
        """Trainer steps whose policy is evaluated: 0 (the seed), every eval.every steps, and the last."""
        if not self.data.eval:
            return []
        steps = {0, self.train.steps}
        if self.eval.every:
            steps.update(range(self.eval.every, self.train.steps, self.eval.every))
        return sorted(steps)


def parse_run_spec(body: bytes | str | dict[str, Any], *, check_paths: bool = False) -> RunSpec:
    """Parse a spec from a dict, JSON or YAML text (JSON is YAML), raising pydantic.ValidationError."""
    if isinstance(body, bytes):
        body = body.decode("utf-8")
    data = yaml.safe_load(body) if isinstance(body, str) else body
    if not isinstance(data, dict):
        raise ValueError("a run spec must be a mapping")
    return RunSpec.model_validate(data, context={"check_paths": check_paths})
