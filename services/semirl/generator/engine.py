"""The generation engine: a real `vllm.LLM` plus policy loading. Knows nothing of gRPC or Redis.

Loading a policy (docs/architecture.md, checkpoints; decisions 4 and 24):
- a directory with a MANIFEST.json is verified first (a half-written or corrupt checkpoint is never loaded);
  the seed model may have none;
- no engine yet: build one;
- an engine of the same architecture (config.json model_type, sizes, vocab): reload the weights in place with
  `collective_rpc("reload_weights", kwargs={"weights_path": dir})` — the engine and its KV cache stay. In vLLM
  0.32 that goes through the model runner's `reload_weights(weights_path=...)`, which points the model config
  at the new directory and streams its weights through the default loader (safetensors preferred, *.bin
  accepted) in checkpoint format. The prefix cache is reset afterwards: its blocks hold KV of the old weights;
- any other architecture (or a different dtype / context length): rebuild the engine.

Receiving a policy in memory (`receive`, docs/architecture.md, weight transfer) goes through vLLM's weight-transfer
API with semirl's backend (generator/weight_receiver.py); the engine is built with that backend configured. A
received version has no path (`Policy.path == ""`) until its export is written; a transfer that fails part-way
leaves no policy loaded, so the next task reloads from storage.

Prompts reach vLLM as `engine_prompt` renders them with the engine's tokenizer: a CHAT prompt as the token ids of
the chat template (core/chat.py: nothing added, so a template that starts with BOS yields one), a RAW one as text
that vLLM tokenizes (adding BOS as the tokenizer does).

Not thread-safe by design: the caller (generator/shared_engine.py) serializes every call with one lock.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semirl.core.chat import PromptError, chat_token_ids
from semirl.core.checkpoint_store import MANIFEST, CheckpointError, check_complete, verify
from semirl.core.wire import PromptFormat
from semirl.generator import weight_receiver

if TYPE_CHECKING:
    from vllm.inputs import TextPrompt, TokensPrompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompt:
    text: str
    format: PromptFormat = PromptFormat.RAW


def engine_prompt(tokenizer: Any, prompt: Prompt) -> TextPrompt | TokensPrompt:
    """What vLLM's `LLM.generate` is given for `prompt` (raises PromptError when it cannot be rendered)."""
    if prompt.format is PromptFormat.CHAT:
        return {"prompt_token_ids": chat_token_ids(tokenizer, prompt.text)}
    return {"prompt": prompt.text}

ARCH_FIELDS = (
    "model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size", "tie_word_embeddings",
)


@dataclass(frozen=True)
class EngineConfig:
    dtype: str = "float32"
    max_model_len: int = 512
    enforce_eager: bool = True
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # more vllm.LLM keyword arguments


@dataclass(frozen=True)
class Policy:
    version: int
    path: str  # "" for a version received in memory

    @property
    def in_memory(self) -> bool:
        return not self.path


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    seed: int = 0  # 0 = unseeded
    logprobs: bool = False  # return each sampled token's logprob


@dataclass
class Generated:
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str


@dataclass(frozen=True)
class LoadResult:
    version: int
    seconds: float
    reloaded: bool          # False when this policy was already loaded
    mode: str               # "noop" | "build" | "inplace" | "rebuild"


# An in-place reload keeps the engine's tokenizer: a policy whose tokenizer or chat template differs needs a rebuild.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "chat_template.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "special_tokens_map.json")


def is_prompt_rejection(err: BaseException) -> bool:
    """Whether vLLM refused the request itself (a prompt too long, bad parameters): retrying cannot help.

    The engine maps ValueError to PromptError, but newer vLLM raises VLLMClientError (not a ValueError).
    """
    if isinstance(err, PromptError):
        return True
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return False
    return isinstance(err, VLLMClientError)


def tokenizer_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        file = Path(path) / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def architecture(path: str | Path) -> dict[str, Any]:
    """What must match for an in-place weight reload: model shape and tokenizer (with its chat template)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable config.json ({err})") from err
    return {**{name: config.get(name) for name in ARCH_FIELDS}, "tokenizer": tokenizer_digest(path)}


VERIFY_ON_LOAD_ENV = "SEMIRL_VERIFY_ON_LOAD"  # "sizes" (default) or "full"


def check_policy_dir(path: str | Path) -> None:
    """Raise CheckpointError unless `path` is a loadable HF directory with every file of its manifest (when it has
    one) present at its size. Generators load only versions the controller committed, and the controller hashed
    every byte of those before committing (docs/architecture.md, decision 35); a second hash here cost a reload
    about as much as the load itself. SEMIRL_VERIFY_ON_LOAD=full hashes again."""
    directory = Path(path)
    if not directory.is_dir() or not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory}: not a model directory (no config.json)")
    if (directory / MANIFEST).is_file():
        if os.environ.get(VERIFY_ON_LOAD_ENV, "sizes") == "full":
            verify(directory)
        else:
            check_complete(directory)


def _context_length(path: str, requested: int) -> int:
    """The requested context, capped at what the model supports (vLLM refuses a longer one)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return requested
    supported = config.get("max_position_embeddings")
    return min(requested, int(supported)) if supported else requested


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "half": 2, "float": 4}
CPU_KV_CACHE_BOUNDS = (64 << 20, 1 << 30)  # 64 MiB..1 GiB; 1 GiB is what VLLM_CPU_KVCACHE_SPACE=1 used to give
CPU_DEFAULT_MAX_NUM_SEQS = 256


def cpu_kv_cache_bytes(path: str, config: EngineConfig) -> int:
    """KV cache bytes that hold `max_num_seqs` sequences of the full context at once (so the scheduler never
    preempts), within CPU_KV_CACHE_BOUNDS: 2 (K, V) x layers x KV heads x head dim x dtype bytes per token.
    vLLM's CPU backend otherwise takes VLLM_CPU_KVCACHE_SPACE whole GiB, and zero-fills all of it while the
    engine builds: 0.7 s of a 2-core start-up for 1 GiB, where the demo's model needs 128 MiB. An unreadable
    config gets the upper bound."""
    low, high = CPU_KV_CACHE_BOUNDS
    try:
        model = json.loads((Path(path) / "config.json").read_text())
        model = model.get("text_config", model)
        heads = int(model["num_attention_heads"])
        head_dim = int(model.get("head_dim") or int(model["hidden_size"]) // heads)
        per_token = 2 * int(model["num_hidden_layers"]) * int(model.get("num_key_value_heads") or heads) * head_dim
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return high
    per_token *= DTYPE_BYTES.get(config.dtype, 4)
    sequences = int(config.extra.get("max_num_seqs") or CPU_DEFAULT_MAX_NUM_SEQS)
    needed = per_token * _context_length(path, config.max_model_len) * sequences
    return max(low, min(high, needed))


def _platform_defaults(path: str, config: EngineConfig) -> dict[str, Any]:
    """vLLM arguments this platform needs. On CPU:
    - a seeded request whose prefill is split by chunked prefill fails ("CPU Generator does not use offset", vLLM
      0.32): every batch of seeded evaluation prompts longer than the 4,096-token step budget did. Without chunking
      the whole prefill runs in one step;
    - the KV cache sized to the model (cpu_kv_cache_bytes) unless VLLM_CPU_KVCACHE_SPACE or the engine arguments
      size it."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    defaults: dict[str, Any] = {"enable_chunked_prefill": False}
    if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        defaults["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(path, config)
    return defaults


class GenerationEngine:
    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.llm: Any = None
        self.policy: Policy | None = None
        self.load_seconds = 0.0  # what loading the current policy took
        self._built_config: EngineConfig | None = None
        self._arch: dict[str, Any] | None = None

    @property
    def ready(self) -> bool:
        return self.llm is not None

    def import_vllm(self) -> float:
        """Import vLLM now; returns the seconds it took. A generator started without a model to preload calls it at
        start-up: the import is 8-12 s of a CPU core, which the first run would otherwise wait for on top of the
        engine build (docs/architecture.md, decision 46)."""
        started = time.perf_counter()
        from vllm import LLM, SamplingParams  # noqa: F401

        return time.perf_counter() - started

    def configure(self, config: EngineConfig) -> None:
        """Use `config` from the next load on (a different dtype/context length forces a rebuild then)."""
        self.config = config

    # --- loading ------------------------------------------------------------------------------------

    def load(self, policy: Policy, *, force: bool = False) -> LoadResult:
        started = time.perf_counter()
        path = str(Path(policy.path).resolve())
        policy = Policy(int(policy.version), path)
        if not force and self.llm is not None and self.policy == policy and self._built_config == self.config:
            return LoadResult(policy.version, 0.0, False, "noop")
        check_policy_dir(path)
        arch = architecture(path)
        if self.llm is None:
            self._build(path)
            mode = "build"
        elif arch == self._arch and self._built_config == self.config:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": path})
            self.llm.reset_prefix_cache()
            mode = "inplace"
        else:
            self.close()
            self._build(path)
            mode = "rebuild"
        self._arch = arch
        self.policy = policy
        seconds = time.perf_counter() - started
        self.load_seconds = seconds
        log.info("loaded policy v%d from %s (%s) in %.2f s", policy.version, path, mode, seconds)
        return LoadResult(policy.version, seconds, True, mode)

    def _build(self, path: str) -> None:
        from vllm import LLM

        # Move everything alive now (torch's and vLLM's ~millions of imported objects) out of the collector's
        # reach: the engine build runs several full collections, 1.3 s of a 2-core start-up when they traverse
        # the import heap, 0.3 s once it is frozen. vLLM freezes its own heap the same way after building.
        gc.collect()
        gc.freeze()

        kwargs: dict[str, Any] = {
            "model": path,
            "dtype": self.config.dtype,
            "max_model_len": _context_length(path, self.config.max_model_len),
            "enforce_eager": self.config.enforce_eager,
            "seed": self.config.seed,
        }
        # On CPU, vLLM replaces the in-process ("uni") executor with worker processes unless V1
        # multiprocessing is off; with it off, everything runs in this process (no spawn: ~60 s faster to
        # start on 2 cores, and no busy-polling sibling processes competing for the cores).
        if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0":
            kwargs["distributed_executor_backend"] = "uni"
        kwargs.update(_platform_defaults(path, self.config))
        kwargs["weight_transfer_config"] = {"backend": weight_receiver.BACKEND}
        kwargs.update(self.config.extra)
        weight_receiver.register()
        self.llm = LLM(**kwargs)
        self._built_config = self.config

    def receive(self, version: int, init: weight_receiver.SemirlInitInfo,
                update: weight_receiver.SemirlUpdateInfo) -> float:
        """Receive policy `version` from the trainer's transfer group into the built engine; the seconds it took.
        The caller checked that the engine serves the run (same architecture as the trainer's model)."""
        if self.llm is None:
            raise RuntimeError("no engine built: load a policy of the run first")
        started = time.perf_counter()
        self.policy = None  # until every bucket is in: a half-updated engine serves nothing
        try:
            weight_receiver.receive(self.llm, init, update)
        finally:
            self.llm.reset_prefix_cache()
        self.policy = Policy(int(version), "")
        seconds = time.perf_counter() - started
        self.load_seconds = seconds
        log.info("received policy v%d in memory in %.2f s", version, seconds)
        return seconds

    def weights_digest(self) -> str:
        if self.llm is None:
            return ""
        return weight_receiver.weights_digest(self.llm)

    def close(self) -> None:
        llm, self.llm = self.llm, None
        self.policy = None
        self._arch = None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 - best effort
                log.debug("engine shutdown failed", exc_info=True)
            del llm

    # --- generating ---------------------------------------------------------------------------------

    def tokenize(self, prompt: str) -> list[int]:
        return list(self.llm.get_tokenizer().encode(prompt))

    def generate(
        self, prompts: list[Prompt], sampling: list[Sampling] | Sampling
    ) -> list[tuple[list[int], list[Generated]]]:
        """One (prompt_token_ids, samples) per prompt; a sample has one logprob per sampled token when its
        Sampling asked for them (none otherwise: vLLM then skips detokenizing a logprob token per position).

        The prompt token ids are those vLLM generated from: the chat-rendered ids of a CHAT prompt, vLLM's own
        tokenization of a RAW one. A prompt that cannot be rendered or that vLLM rejects raises PromptError.
        """
        if self.llm is None:
            raise RuntimeError("no policy loaded")
        if not prompts:
            return []
        per_prompt = sampling if isinstance(sampling, list) else [sampling] * len(prompts)
        if len(per_prompt) != len(prompts):
            raise ValueError("one Sampling per prompt")
        tokenizer = self.llm.get_tokenizer()
        inputs = [engine_prompt(tokenizer, prompt) for prompt in prompts]
        params = [self._params(s) for s in per_prompt]
        try:
            outputs = self.llm.generate(inputs, params, use_tqdm=False)
        except ValueError as err:  # vLLM's input validation (too long, bad parameters)
            raise PromptError(str(err)) from err
        results: list[tuple[list[int], list[Generated]]] = []
        for output in outputs:
            samples = []
            for completion in output.outputs:
                token_ids = list(completion.token_ids)
                samples.append(Generated(
                    text=completion.text,
                    token_ids=token_ids,
                    logprobs=_sampled_logprobs(token_ids, completion.logprobs),
                    finish_reason=str(completion.finish_reason or ""),
                ))
            results.append((list(output.prompt_token_ids or []), samples))
        return results

    def _params(self, sampling: Sampling) -> Any:
        from vllm import SamplingParams

        top_p = sampling.top_p if 0.0 < sampling.top_p <= 1.0 else 1.0
        return SamplingParams(
            n=max(1, int(sampling.n)),
            temperature=max(0.0, float(sampling.temperature)),
            top_p=top_p,
            max_tokens=max(1, int(sampling.max_tokens or 128)),
            seed=int(sampling.seed) if sampling.seed else None,
            logprobs=0 if sampling.logprobs else None,  # 0: the sampled token's own logprob only
        )


def _sampled_logprobs(token_ids: list[int], logprobs: Any) -> list[float]:
    """One logprob per sampled token; none at all when they were not asked for."""
    if logprobs is None:
        return []
    if not logprobs:
        return [math.nan] * len(token_ids)
    values = []
    for token_id, position in zip(token_ids, logprobs, strict=False):
        entry = position.get(token_id) if position else None
        values.append(float(entry.logprob) if entry is not None else math.nan)
    return values
