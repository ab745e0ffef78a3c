"""The DPO engine on real DeepSpeed (CPU accelerator) with a tiny random Llama."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
import torch
from service_process import running_service
from trainer_harness import StandInController, activate, controller_server, redis_url, running_trainer, wait_for

from semirl.core import keys
from semirl.core.checkpoint_store import verify
from semirl.core.grpc_server import channel
from semirl.core.runstate import load_run
from semirl.core.streams import pending_count, publish
from semirl.proto import controller_pb2, trainer_pb2, trainer_pb2_grpc, types_pb2
from semirl.spec import RunSpec
from semirl.trainer.checkpoint_writer import TrainerCheckpoints
from semirl.trainer.engine import REFERENCE_DIR, STATE_FILE, EngineGuardError, TrainingEngine, load_trainer_state
from semirl.trainer.logprobs import sequence_logps
from semirl.trainer.objectives import StepExamples
from semirl.trainer.pairs import Pair
from semirl.trainer.ranks import RankDriver, RankWorker

VOCAB = 100


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
        pad_token_id=0, tie_word_embeddings=False,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    GenerationConfig(bos_token_id=1, eos_token_id=2).save_pretrained(path)
    return path


def _spec(model: Path, adam_eps: float = 1e-8, loss_normalizer: str = "pairs", **train: int) -> RunSpec:
    return RunSpec.model_validate({
        "name": "engine-test",
        "model": {"path": str(model)},
        "data": {"train": {"path": "unused.jsonl"}},
        "sync": {"interval": 2},
        "train": {"steps": 4, "batch_prompts": 4, "micro_batch_pairs": 2, "seed": 0, **train},
        "optim": {"lr": 1e-3, "adam_eps": adam_eps, "grad_clip": 1.0},
        "dpo": {"beta": 0.1, "loss_normalizer": loss_normalizer},
    })


def _pairs(n: int = 3) -> list[Pair]:
    gen = torch.Generator().manual_seed(1)
    pairs = []
    for i in range(n):
        prompt = tuple(int(t) for t in torch.randint(3, VOCAB, (4 + i,), generator=gen))
        chosen = tuple(int(t) for t in torch.randint(3, VOCAB, (5 + i,), generator=gen))
        rejected = tuple(int(t) for t in torch.randint(3, VOCAB, (3 + 2 * i,), generator=gen))
        pairs.append(Pair(f"t1-{i}", 0, prompt, chosen, rejected, 0, 1))
    return pairs


def _weights(engine: TrainingEngine) -> dict[str, torch.Tensor]:
    state = engine.policy_state_dict()
    assert state is not None
    return state


def _step(pairs: list[Pair], prompts: int = 4) -> StepExamples:
    return StepExamples(examples=pairs, prompts=prompts)


@torch.no_grad()
def _margins(engine: TrainingEngine, pairs: list[Pair]) -> tuple[float, float]:
    """(mean implicit-reward margin, mean policy logp margin) of `pairs` under the engine's policy and reference."""
    batch = engine._batch(pairs)
    policy, reference = sequence_logps(engine.module, batch), sequence_logps(engine.ref, batch)
    result = engine.objective.loss(pairs, policy, reference)
    m = len(pairs)
    return result.sums["margin"] / m, float((policy.logps[:m] - policy.logps[m:]).mean())


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol, rtol=0), key


def _save(store: TrainerCheckpoints, engine: TrainingEngine, step: int, extra: dict) -> Path:
    return store.save(RankDriver(engine.ranks, _Holding(engine)), step, extra)


class _Holding(RankWorker):
    """A rank worker around an engine the test built itself."""

    def __init__(self, engine: TrainingEngine) -> None:
        super().__init__(engine.ranks)
        self.engine = engine


def test_dpo_steps_move_policy_and_resume_is_exact(tiny_model: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_model)
    pairs = _pairs(3)  # 3 pairs, micro batch 2: two micro batches accumulated into one step
    engine = TrainingEngine(spec)
    margin0, logp_margin0 = _margins(engine, pairs)
    assert margin0 == pytest.approx(0.0, abs=1e-6)  # policy == reference at the start
    seed_weights = _weights(engine)

    m1 = engine.train_step(_step(pairs))
    assert m1["loss"] == pytest.approx(torch.nn.functional.softplus(torch.tensor(0.0)).item(), abs=1e-5)
    assert _margins(engine, pairs)[0] > 0  # step 1 moved the policy toward the chosen responses
    m2 = engine.train_step(_step(pairs))
    assert m2["margin"] > 0 and m2["loss"] < m1["loss"]
    assert _margins(engine, pairs)[1] > logp_margin0
    # sync.interval 2 -> the reference re-syncs at step 2
    assert engine.step == 2 and engine.ref_synced_at == 2
    _assert_same(_weights(engine), {k: v for k, v in engine.ref.state_dict().items()})
    assert any(not torch.equal(seed_weights[k], v) for k, v in _weights(engine).items())

    # a step with no pairs counts but does not change the weights
    frozen = _weights(engine)
    empty = engine.train_step(_step([]))
    assert engine.step == 3 and engine.updates == 2 and empty["loss"] == 0.0
    _assert_same(frozen, _weights(engine))

    store = TrainerCheckpoints(tmp_path / "store", "run-1", None, str(tiny_model))
    policy_dir = _save(store, engine, 3, {"consumed_prompt_ids": ["t1-0"]})
    verify(policy_dir)
    assert (policy_dir / "model.safetensors").is_file() and (policy_dir / "generation_config.json").is_file()
    assert store.latest_step() == 3
    trainer_dir = store.verified_trainer_dir(3)
    state = json.loads((trainer_dir / STATE_FILE).read_text())
    # the reference (synced at step 2) is neither the seed nor the step-3 policy: it is saved with the state
    assert state["ref_synced_at"] == 2 and state["reference"] == "saved"
    assert (trainer_dir / REFERENCE_DIR / "model.safetensors").is_file()

    resumed = TrainingEngine(spec)
    assert load_trainer_state(resumed, trainer_dir)["consumed_prompt_ids"] == ["t1-0"]
    assert (resumed.step, resumed.updates, resumed.ref_synced_at) == (3, 2, 2)
    _assert_same(_weights(engine), _weights(resumed))
    _assert_same(engine.ref.state_dict(), resumed.ref.state_dict())
    # the optimizer state came back too: the next step is identical on both engines
    engine.train_step(_step(pairs))
    resumed.train_step(_step(pairs))
    _assert_same(_weights(engine), _weights(resumed), atol=1e-7)

    final = store.save_final(policy_dir)
    verify(final)


def test_a_reference_equal_to_the_policy_is_not_written_twice(tiny_model: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_model)
    engine = TrainingEngine(spec)
    engine.train_step(_step(_pairs(2)))
    engine.train_step(_step(_pairs(2)))  # step 2: the reference re-syncs to the policy
    store = TrainerCheckpoints(tmp_path / "store", "run-1", None, str(tiny_model))
    _save(store, engine, 2, {})
    trainer_dir = store.verified_trainer_dir(2)
    assert json.loads((trainer_dir / STATE_FILE).read_text())["reference"] == "policy"
    assert not (trainer_dir / REFERENCE_DIR).exists()
    resumed = TrainingEngine(spec)
    load_trainer_state(resumed, trainer_dir)
    _assert_same(engine.ref.state_dict(), resumed.ref.state_dict())


def test_micro_batching_accumulates_the_mean_gradient(tiny_model: Path) -> None:
    pairs = _pairs(3)
    # a large Adam eps makes the first update ~ lr·g (not lr·sign(g)), so weights compare gradients
    split = TrainingEngine(_spec(tiny_model, adam_eps=1.0, micro_batch_pairs=1))
    whole = TrainingEngine(_spec(tiny_model, adam_eps=1.0, micro_batch_pairs=4))
    a, b = split.train_step(_step(pairs)), whole.train_step(_step(pairs))
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    _assert_same(_weights(split), _weights(whole), atol=1e-8)


def test_loss_normalizer_prompts_or_pairs(tiny_model: Path) -> None:
    """The paper divides the summed pair losses by the step's prompts (skipped included), TRL by its pairs: with
    3 pairs out of 12 prompts the first gradient is 3/12 of TRL's."""
    pairs = _pairs(3)
    by_prompts = TrainingEngine(_spec(tiny_model, adam_eps=1.0, batch_prompts=12, loss_normalizer="prompts"))
    by_pairs = TrainingEngine(_spec(tiny_model, adam_eps=1.0, batch_prompts=12, loss_normalizer="pairs"))
    a = by_prompts.train_step(_step(pairs, prompts=12))
    b = by_pairs.train_step(_step(pairs, prompts=12))
    assert a["grad_norm"] == pytest.approx(b["grad_norm"] * 3 / 12, rel=1e-4)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)  # the reported loss is the mean over pairs either way


# --- the trainer service against real Redis and a stand-in controller (gRPC) ---------------------------------


def _scored(run_id: str, prompt_id: str, version: int, rewards: list[float], seed: int) -> types_pb2.ScoredGroup:
    gen = torch.Generator().manual_seed(seed)
    samples = [
        types_pb2.Sample(token_ids=[int(t) for t in torch.randint(3, VOCAB, (3 + i,), generator=gen)])
        for i in range(len(rewards))
    ]
    step = int(prompt_id[1:].split("-")[0])  # the controller names train prompts t{step}-{slot}
    task = types_pb2.PromptTask(run_id=run_id, prompt_id=prompt_id, purpose=types_pb2.TASK_PURPOSE_TRAIN,
                                train_step=step)
    group = types_pb2.SampleGroup(
        task=task, prompt_token_ids=[int(t) for t in torch.randint(3, VOCAB, (4,), generator=gen)],
        samples=samples, policy_version=version,
    )
    return types_pb2.ScoredGroup(group=group, rewards=rewards)


def _publish_step(client: redis.Redis, run_id: str, spec: RunSpec, step: int) -> None:
    version = spec.policy_version_for_step(step)
    publish(client, keys.SCORED, _scored(run_id, f"t{step}-0", version, [1.0, 0.0, 0.0, 1.0], step * 10))
    rewards = [1.0, 1.0, 1.0, 1.0] if step == 1 else [0.0, 1.0, 0.0, 0.0]  # step 1: one all-correct skip
    publish(client, keys.SCORED, _scored(run_id, f"t{step}-1", version, rewards, step * 10 + 1))


def test_service_trains_checkpoints_acks_and_resumes(
    tiny_model: Path, tmp_path: Path, redis_client: redis.Redis
) -> None:
    spec = RunSpec.model_validate({
        "name": "svc", "model": {"path": str(tiny_model)}, "data": {"train": {"path": "unused.jsonl"}},
        "sync": {"interval": 2}, "train": {"steps": 3, "batch_prompts": 2, "micro_batch_pairs": 1},
        "optim": {"lr": 1e-3}, "checkpoint": {"every": 2},  # trainer state at every sync
    })
    run_id = "run-svc"
    store = tmp_path / "store"
    activate(redis_client, run_id, spec, store / "runs" / run_id, tiny_model)
    controller = StandInController(redis_client, break_first_commit=True)
    server = controller_server(controller)
    try:
        # noise: another run's group, a group of the wrong version, a duplicate prompt id
        publish(redis_client, keys.SCORED, _scored("other-run", "t1-0", 0, [1.0, 0.0], 99))
        publish(redis_client, keys.SCORED, _scored(run_id, "t1-5", 2, [1.0, 0.0], 98))
        _publish_step(redis_client, run_id, spec, 1)
        publish(redis_client, keys.SCORED, _scored(run_id, "t1-0", 0, [1.0, 0.0], 97))

        # 1) a trainer trains step 1, waits for step 2 and is stopped: step 1's groups stay pending
        with running_trainer(redis_url(redis_client), store, server.port, "trainer-t"):
            wait_for(lambda: len(controller.reports) == 1)
            first = controller.reports[0]
            assert first.step == 1 and first.metrics["pairs"] == 1 and first.metrics["skipped"] == 1
            uses = {(u.prompt_id, u.trained, u.skip_reason) for u in first.groups}
            assert ("t1-1", False, "all_correct") in uses and ("t1-0", True, "") in uses
            assert ("t1-5", False, "dropped_wrong_version") in uses
            assert pending_count(redis_client, keys.SCORED, keys.TRAINER_GROUP) == 2

        # 2) a restarted trainer (same id) replays step 1 from its pending entries, trains step 2; the first commit
        #    fails (transient error) after the checkpoint was written, so it resumes from that checkpoint and
        #    re-commits
        def release_step_3(request: controller_pb2.CommitCheckpointRequest) -> None:
            if request.policy.version == 2:
                _publish_step(redis_client, run_id, spec, 3)

        controller.on_commit.append(release_step_3)
        with running_trainer(redis_url(redis_client), store, server.port, "trainer-t"):
            _publish_step(redis_client, run_id, spec, 2)
            wait_for(lambda: any(c.final for c in controller.commits))
    finally:
        server.stop()

    steps = [r.step for r in controller.reports]
    assert steps == [1, 1, 2, 3]  # step 1 replayed after the restart (it had no checkpoint), 2 never retrained
    assert [r.resumed_from_step for r in controller.reports] == [0, 0, 0, 2]
    assert [(c.policy.version, c.final) for c in controller.commits] == [(2, False), (3, True)]
    assert controller.reports[-1].metrics["staleness"] == 1.0
    assert pending_count(redis_client, keys.SCORED, keys.TRAINER_GROUP) == 0
    run_dir = store / "runs" / run_id
    verify(run_dir / "final")
    verify(run_dir / "policy" / "v3")
    assert sorted(p.name for p in (run_dir / "trainer").iterdir()) == ["step2", "step3"]
    state = json.loads((run_dir / "trainer" / "step3" / STATE_FILE).read_text())
    assert state["step"] == 3 and state["ref_synced_at"] == 2
    assert set(state["consumed_prompt_ids"]) == {"t1-0", "t1-1", "t2-0", "t2-1", "t3-0", "t3-1"}


def test_a_trainer_state_behind_the_committed_policy_resumes_safely(
    tiny_model: Path, tmp_path: Path, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The policy is committed before the trainer state is written. If the trainer dies in between (here: the
    state write of step 2 fails once, after v2 was committed), the retry resumes from an older state, replays
    steps 1-2 on their still-pending groups, keeps the committed v2 untouched (generators may be loading it),
    re-commits it harmlessly and goes on: nothing acked early, nothing trained twice in the end."""
    spec = RunSpec.model_validate({
        "name": "lag", "model": {"path": str(tiny_model)}, "data": {"train": {"path": "unused.jsonl"}},
        "sync": {"interval": 2}, "train": {"steps": 3, "batch_prompts": 2, "micro_batch_pairs": 1},
        "optim": {"lr": 1e-3}, "checkpoint": {"every": 2},  # trainer state at every sync
    })
    run_id = "run-lag"
    store = tmp_path / "store"
    run_dir = store / "runs" / run_id
    activate(redis_client, run_id, spec, run_dir, tiny_model)
    controller = StandInController(redis_client)
    write_state = TrainerCheckpoints.save_trainer_state
    pending_at_failure: list[int] = []
    v2_at_failure: list[int] = []

    def dies_once(self: TrainerCheckpoints, driver: RankDriver, step: int, extra: dict) -> Path:
        if step == 2 and not pending_at_failure:
            pending_at_failure.append(pending_count(redis_client, keys.SCORED, keys.TRAINER_GROUP))
            v2_at_failure.append((run_dir / "policy" / "v2").stat().st_ino)
            raise OSError("the trainer pod died while writing its state")
        return write_state(self, driver, step, extra)

    monkeypatch.setattr(TrainerCheckpoints, "save_trainer_state", dies_once)
    controller.on_commit.append(lambda r: _publish_step(redis_client, run_id, spec, 3) if r.policy.version == 2
                                else None)
    server = controller_server(controller)
    try:
        _publish_step(redis_client, run_id, spec, 1)
        _publish_step(redis_client, run_id, spec, 2)
        with running_trainer(redis_url(redis_client), store, server.port, "trainer-t"):
            wait_for(lambda: any(c.final for c in controller.commits))
    finally:
        server.stop()

    assert pending_at_failure == [4]  # v2 committed, its groups still pending: a restart can replay them
    assert [(c.policy.version, c.final) for c in controller.commits] == [(2, False), (2, False), (3, True)]
    assert [r.step for r in controller.reports] == [1, 2, 1, 2, 3]
    # Where each step's time went: its own compute, and the parts of the checkpoint before it.
    last = controller.reports[-1].metrics
    assert last["time_forward_backward_s"] > 0 and last["time_optimizer_s"] > 0 and last["time_reference_s"] > 0
    assert all(last[part] > 0 for part in ("checkpoint_policy_s", "checkpoint_commit_s", "checkpoint_state_s"))
    assert "checkpoint_policy_s" not in controller.reports[-2].metrics  # step 2 follows no checkpoint
    assert (run_dir / "policy" / "v2").stat().st_ino == v2_at_failure[0]  # the committed v2 kept, not replaced
    verify(run_dir / "policy" / "v2")
    assert sorted(p.name for p in (run_dir / "trainer").iterdir()) == ["step2", "step3"]
    state = json.loads((run_dir / "trainer" / "step3" / STATE_FILE).read_text())
    assert set(state["consumed_prompt_ids"]) == {"t1-0", "t1-1", "t2-0", "t2-1", "t3-0", "t3-1"}
    assert pending_count(redis_client, keys.SCORED, keys.TRAINER_GROUP) == 0


def test_service_stops_a_cancelled_run(tiny_model: Path, tmp_path: Path, redis_client: redis.Redis) -> None:
    spec = RunSpec.model_validate({
        "name": "svc", "model": {"path": str(tiny_model)}, "data": {"train": {"path": "unused.jsonl"}},
        "sync": {"interval": 2}, "train": {"steps": 3, "batch_prompts": 2, "micro_batch_pairs": 2},
    })
    run_id = "run-cancel"
    store = tmp_path / "store"
    activate(redis_client, run_id, spec, store / "runs" / run_id, tiny_model)
    controller = StandInController(redis_client)
    controller.cancel = True
    server = controller_server(controller)
    try:
        with running_trainer(redis_url(redis_client), store, server.port, "trainer-c") as service:
            _publish_step(redis_client, run_id, spec, 1)
            _publish_step(redis_client, run_id, spec, 2)
            wait_for(lambda: run_id in service.finished)
            with channel(f"127.0.0.1:{service.port}") as chan:
                status = trainer_pb2_grpc.TrainerServiceStub(chan).Status(trainer_pb2.TrainerStatusRequest(),
                                                                         timeout=5)
            assert status.run_id == run_id and status.state == "done"
    finally:
        server.stop()
    assert [r.step for r in controller.reports] == [1]  # cancelled at the first report: no step 2, no checkpoint
    assert controller.commits == [] and not (store / "runs" / run_id / "trainer").exists()


def test_refused_commit_fails_the_run(tiny_model: Path, tmp_path: Path, redis_client: redis.Redis) -> None:
    spec = RunSpec.model_validate({
        "name": "svc", "model": {"path": str(tiny_model)}, "data": {"train": {"path": "unused.jsonl"}},
        "sync": {"interval": 1}, "train": {"steps": 3, "batch_prompts": 2, "micro_batch_pairs": 2},
    })
    run_id = "run-refused"
    store = tmp_path / "store"
    activate(redis_client, run_id, spec, store / "runs" / run_id, tiny_model)
    controller = StandInController(redis_client, refuse_commits=True)
    server = controller_server(controller)
    try:
        with running_trainer(redis_url(redis_client), store, server.port, "trainer-r") as service:
            _publish_step(redis_client, run_id, spec, 1)
            wait_for(lambda: run_id in service.finished)
            time.sleep(0.5)  # it must not pick the run up again
    finally:
        server.stop()
    assert len(controller.fails) == 1 and controller.fails[0].run_id == run_id
    assert "simulated refusal" in controller.fails[0].error
    record = load_run(redis_client, run_id)
    assert record.state == "failed" and "simulated refusal" in record.error
    assert [r.step for r in controller.reports] == [1]  # no retry from a checkpoint after the refusal
    assert controller.commits == []


def test_trainer_process_serves_health_and_exits_on_sigterm(tmp_path: Path, redis_client: redis.Redis) -> None:
    args = ["--controller", "127.0.0.1:1", "--trainer-id", "trainer-p"]
    with running_service("trainer", redis_url(redis_client), tmp_path, args,
                         env={"SEMIRL_STORE": str(tmp_path)}, stop_timeout_s=30) as trainer:
        with channel(trainer.target) as chan:
            status = trainer_pb2_grpc.TrainerServiceStub(chan).Status(trainer_pb2.TrainerStatusRequest(), timeout=5)
        assert status.trainer_id == "trainer-p" and status.state == "idle"
    assert "serving gRPC" in trainer.log_path.read_text()  # exited 0 on SIGTERM: checked by running_service


def test_activation_checkpointing_gives_the_same_update(tiny_model: Path) -> None:
    pairs = _pairs(3)
    plain = TrainingEngine(_spec(tiny_model, adam_eps=1.0))
    recomputed = TrainingEngine(_spec(tiny_model, adam_eps=1.0, gradient_checkpointing=True))
    assert recomputed.module.is_gradient_checkpointing and not plain.module.is_gradient_checkpointing
    a, b = plain.train_step(_step(pairs)), recomputed.train_step(_step(pairs))
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    _assert_same(_weights(plain), _weights(recomputed), atol=1e-7)


def test_the_engine_refuses_a_deepspeed_that_does_not_step_at_each_step(tiny_model: Path) -> None:
    """A DeepSpeed that ignored `managed_gradient_accumulation: false` would step every N micro batches."""
    engine = TrainingEngine(_spec(tiny_model))
    engine._check_unmanaged_accumulation()  # the pinned DeepSpeed honours it
    engine.engine._config.managed_gradient_accumulation = True
    with pytest.raises(EngineGuardError, match="managed_gradient_accumulation"):
        engine._check_unmanaged_accumulation()
    engine.engine._config.managed_gradient_accumulation = False
    engine.engine.global_steps -= 5  # as if step() had not advanced the optimizer step
    original = engine.engine.step
    engine.engine.step = lambda *a, **k: None  # noqa: ARG005
    with pytest.raises(EngineGuardError, match="did not step"):
        engine.train_step(_step(_pairs(2)))
    engine.engine.step = original


def test_a_run_checkpointed_by_another_world_size_is_failed_not_loaded(
    tiny_model: Path, tmp_path: Path, redis_client: redis.Redis
) -> None:
    """DeepSpeed's optimizer shards load only into a job of the same size: the trainer says so and fails the run."""
    spec = _spec(tiny_model)
    run_id, store = "run-world", tmp_path / "store"
    engine = TrainingEngine(spec)
    engine.train_step(_step(_pairs(2)))
    engine.train_step(_step(_pairs(2)))
    state = engine.state
    engine.state = lambda: {**state(), "world_size": 2}  # as written by a 2-rank job
    _save(TrainerCheckpoints(store, run_id, None, str(tiny_model)), engine, 2, {})
    activate(redis_client, run_id, spec, store / "runs" / run_id, tiny_model)
    controller = StandInController(redis_client)
    server = controller_server(controller)
    try:
        with running_trainer(redis_url(redis_client), store, server.port, "trainer-w") as service:
            wait_for(lambda: run_id in service.finished)
    finally:
        server.stop()
    assert len(controller.fails) == 1 and "checkpointed at step 2 by 2 trainer ranks" in controller.fails[0].error
    assert controller.reports == [] and controller.commits == []
