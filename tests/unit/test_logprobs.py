"""The lean sequence logprobs (backbone + chunked, checkpointed head) against the naive full log-softmax."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from semirl.trainer.logprobs import SeqBatch, SeqLogps, build_batch, sequence_logps

VOCAB = 101


def _llama(*, tie: bool = False, seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tie, pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def _ragged_batch() -> SeqBatch:
    """Different prompt and response lengths, right padding, and one empty response: 12 response tokens."""
    gen = torch.Generator().manual_seed(3)

    def ids(n: int) -> list[int]:
        return torch.randint(1, VOCAB, (n,), generator=gen).tolist()

    return build_batch([(ids(3), ids(6)), (ids(7), ids(2)), (ids(1), ids(4)), (ids(2), [])])


def _naive(model: torch.nn.Module, batch: SeqBatch, entropy_grad: bool = False) -> SeqLogps:
    """The reference: full [B, T, V] fp32 logits and log-softmax."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    mask = batch.response_mask[:, 1:].float()
    token_logps = torch.gather(log_probs, 2, batch.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1) * mask
    tokens = mask.sum(-1)
    source = log_probs if entropy_grad else log_probs.detach()
    entropy = (-(source.exp() * source).sum(-1) * mask).sum(-1) / tokens.clamp(min=1)
    return SeqLogps(logps=token_logps.sum(-1), tokens=tokens, entropy=entropy, token_logps=token_logps)


def _assert_close(lean: SeqLogps, naive: SeqLogps, atol: float = 1e-5) -> None:
    assert lean.tokens.tolist() == naive.tokens.tolist()
    for name in ("logps", "entropy", "token_logps"):
        got, want = getattr(lean, name).detach(), getattr(naive, name).detach().to(getattr(lean, name).dtype)
        assert got.dtype == torch.float32 and got.shape == want.shape, name
        torch.testing.assert_close(got, want, rtol=1e-6, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


def _loss(out: SeqLogps) -> torch.Tensor:
    """Uses every output with distinct weights, so any mis-scattered gradient shows."""
    weights = torch.arange(1, out.token_logps.shape[1] + 1, dtype=torch.float32)
    return (out.logps * torch.tensor([1.0, -2.0, 0.5, 3.0])).sum() + (out.token_logps * weights).sum() / 7 + (
        out.entropy * torch.tensor([0.3, -0.7, 1.1, 0.9])
    ).sum()


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _assert_same_grads(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("chunk_tokens", [1, 4, 5, 12, 512])  # 12 response tokens: 1, 4, 12 divide; 5 does not
def test_lean_path_equals_full_log_softmax(chunk_tokens: int) -> None:
    model, batch = _llama(), _ragged_batch()
    with torch.no_grad():
        lean = sequence_logps(model, batch, chunk_tokens=chunk_tokens)
        naive = _naive(model, batch)
    _assert_close(lean, naive)
    assert lean.tokens.tolist() == [6.0, 2.0, 4.0, 0.0]
    assert lean.token_logps.shape == (4, batch.input_ids.shape[1] - 1)
    assert (lean.token_logps[~batch.response_mask[:, 1:]] == 0).all()
    assert (lean.token_logps[batch.response_mask[:, 1:]] < 0).all()
    assert lean.logps[3] == 0 and lean.entropy[3] == 0  # the empty response
    assert "forward" not in model.__dict__ and "forward" not in model.lm_head.__dict__  # the swap is undone


def test_head_is_never_applied_to_all_positions() -> None:
    model, batch = _llama(), _ragged_batch()
    rows_seen: list[int] = []
    model.lm_head.register_forward_hook(lambda _m, args, _o: rows_seen.append(args[0].shape[0]))
    with torch.no_grad():
        sequence_logps(model, batch, chunk_tokens=5)
    assert rows_seen == [12]  # one head call over the 12 response predictors, never B × T positions


@pytest.mark.parametrize("entropy_grad", [False, True])
@pytest.mark.parametrize("tie", [False, True])
def test_gradients_equal_the_full_log_softmax_gradients(entropy_grad: bool, tie: bool) -> None:
    lean_model = _llama(tie=tie)
    naive_model = copy.deepcopy(lean_model)
    if tie:
        assert lean_model.lm_head.weight is lean_model.model.embed_tokens.weight
    batch = _ragged_batch()
    lean = sequence_logps(lean_model, batch, entropy_grad=entropy_grad, chunk_tokens=5)
    naive = _naive(naive_model, batch, entropy_grad=entropy_grad)
    _assert_close(lean, naive)
    assert lean.entropy.requires_grad is entropy_grad and lean.logps.requires_grad
    _loss(lean).backward()
    _loss(naive).backward()
    _assert_same_grads(_grads(lean_model), _grads(naive_model))


def test_gradients_with_the_backbone_checkpointed_in_train_mode() -> None:
    lean_model = _llama()
    naive_model = copy.deepcopy(lean_model)
    lean_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lean_model.train()
    batch = _ragged_batch()
    _loss(sequence_logps(lean_model, batch, entropy_grad=True, chunk_tokens=4)).backward()
    _loss(_naive(naive_model, batch, entropy_grad=True)).backward()
    _assert_same_grads(_grads(lean_model), _grads(naive_model))


def test_bf16_model_is_close_to_fp32() -> None:
    """bf16 backbone and head (logits rounded to bf16, then fp32 softmax math) against fp32 on the same bf16-rounded
    weights: within 0.05 nats per token logprob and per mean entropy, 0.1 per summed logprob."""
    model = _llama().to(torch.bfloat16)
    reference = copy.deepcopy(model).float()
    batch = _ragged_batch()
    with torch.no_grad():
        lean = sequence_logps(model, batch, chunk_tokens=5)
        naive = _naive(reference, batch)
    assert lean.logps.dtype == lean.token_logps.dtype == lean.entropy.dtype == torch.float32
    torch.testing.assert_close(lean.token_logps, naive.token_logps, rtol=0, atol=0.05)
    torch.testing.assert_close(lean.entropy, naive.entropy, rtol=0, atol=0.05)
    torch.testing.assert_close(lean.logps, naive.logps, rtol=0, atol=0.1)
    _loss(sequence_logps(model, batch, entropy_grad=True, chunk_tokens=5)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def _gemma2() -> torch.nn.Module:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=64, final_logit_softcapping=2.0,
    )
    return Gemma2ForCausalLM(config)


def _granite() -> torch.nn.Module:
    from transformers import GraniteConfig, GraniteForCausalLM

    config = GraniteConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64, logits_scaling=3.0,
    )
    return GraniteForCausalLM(config)


def _cohere() -> torch.nn.Module:
    from transformers import CohereConfig, CohereForCausalLM

    config = CohereConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64, logit_scale=4.0, bos_token_id=1, eos_token_id=2,
        pad_token_id=0,
    )
    return CohereForCausalLM(config)


@pytest.mark.parametrize("build", [_gemma2, _granite, _cohere], ids=["softcap", "logits_scaling", "logit_scale"])
def test_declared_logit_scaling_and_softcapping_are_applied(build: Any) -> None:
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():
        for p in model.parameters():  # large weights, so that a missing softcap or scale changes the result
            p.mul_(4.0)
        _assert_close(sequence_logps(model, _ragged_batch(), chunk_tokens=5), _naive(model, _ragged_batch()))


def test_a_head_that_is_not_linear_is_refused() -> None:
    model = _llama()
    model.lm_head = torch.nn.Sequential(model.lm_head)
    with pytest.raises(ValueError, match="linear output head"):
        sequence_logps(model, _ragged_batch())


def test_chunk_tokens_must_be_positive() -> None:
    with pytest.raises(ValueError, match="chunk_tokens"):
        sequence_logps(_llama(), _ragged_batch(), chunk_tokens=0)


# --- DeepSpeed ZeRO-3 (one rank, CPU) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def deepspeed_world() -> Iterator[Any]:
    from semirl.trainer.distributed import ensure_distributed, import_deepspeed

    deepspeed = import_deepspeed()
    ensure_distributed()
    yield deepspeed


def _zero3(deepspeed: Any, model: torch.nn.Module) -> Any:
    config = {
        "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "train_batch_size": 1,
        "managed_gradient_accumulation": False,
        # threshold 0: even these tiny weights are partitioned, so every call must gather them through the hooks
        "zero_optimization": {"stage": 3, "overlap_comm": False, "stage3_param_persistence_threshold": 0},
        "zero_allow_untested_optimizer": True, "steps_per_print": 1 << 30,
    }
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine


@pytest.mark.parametrize("tie", [False, True])
def test_zero3_engine_matches_the_plain_model(deepspeed_world: Any, tie: bool) -> None:
    deepspeed = deepspeed_world
    naive_model = _llama(tie=tie)
    engine = _zero3(deepspeed, copy.deepcopy(naive_model))
    assert engine.module.lm_head.weight.numel() == 0  # partitioned away outside a forward
    batch = _ragged_batch()
    engine.train()
    lean = sequence_logps(engine, batch, entropy_grad=True, chunk_tokens=5)
    naive = _naive(naive_model, batch, entropy_grad=True)
    _assert_close(lean, naive)
    engine.backward(_loss(lean), scale_wrt_gas=False)
    _loss(naive).backward()
    lean_grads = {
        name: deepspeed.utils.safe_get_full_grad(p).clone() for name, p in engine.module.named_parameters()
    }
    _assert_same_grads(lean_grads, _grads(naive_model))
    # A second micro batch with another token count (so another number of chunks), then the optimizer step.
    short = build_batch([([5, 6], [7, 8, 9])])
    engine.backward(sequence_logps(engine, short, chunk_tokens=2).logps.sum(), scale_wrt_gas=False)
    engine.step()
    with torch.no_grad():
        after = sequence_logps(engine, batch, chunk_tokens=5)
        _assert_close(sequence_logps(engine.module, batch), after)
    assert not torch.allclose(after.logps, naive.logps)  # the step changed the weights
    assert "forward" not in engine.module.__dict__
    engine.destroy()
