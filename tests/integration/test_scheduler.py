"""The run loop with a real redis-server, a real checkpoint directory and real gRPC servers.

The trainer is simulated by writing checkpoints with core.checkpoints.staged_directory (as the trainer does)
and calling CommitCheckpoint / ReportStep over gRPC; generators by a small gRPC GeneratorService that records
the Reload calls it gets. Scored eval groups are published on the eval_scored stream as the scorers would.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from trainer_harness import wait_for  # a sibling module (pytest puts this test's folder on sys.path)

from semirl.controller.controller import Controller
from semirl.controller.grpc_api import build_grpc_server
from semirl.core import keys
from semirl.core.checkpoint_store import RunCheckpoints, staged_directory
from semirl.core.grpc_server import ServiceServer, channel, check_health
from semirl.core.redis_server import start_redis
from semirl.core.runstate import load_run, save_run
from semirl.core.streams import PAYLOAD_FIELD, publish
from semirl.proto import controller_pb2, controller_pb2_grpc, generator_pb2, generator_pb2_grpc, types_pb2
from semirl.spec import RunSpec, parse_run_spec

BATCH = 2
EVAL_PROMPTS = 3


class RecordingGenerator(generator_pb2_grpc.GeneratorServiceServicer):
    def __init__(self) -> None:
        self.reloads: list[generator_pb2.ReloadRequest] = []

    def Reload(self, request, context):  # noqa: ANN001, ANN201, N802
        self.reloads.append(request)
        return generator_pb2.ReloadResponse(policy_version=request.policy.version, seconds=0.01, reloaded=True,
                                            load_seconds=0.01)


class FrozenGenerator(RecordingGenerator):
    """A generator whose Reload hangs until `thaw` is set (a stuck weight load)."""

    def __init__(self) -> None:
        super().__init__()
        self.thaw = threading.Event()

    def Reload(self, request, context):  # noqa: ANN001, ANN201, N802
        self.thaw.wait(30)
        return super().Reload(request, context)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    model = tmp_path / "seed"
    model.mkdir()
    (model / "config.json").write_text("{}")
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"problem": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(20)))
    evals = tmp_path / "eval.jsonl"
    evals.write_text("".join(json.dumps({"problem": f"{i}+2?", "answer": str(i + 2)}) + "\n" for i in range(9)))
    amc = tmp_path / "amc23.jsonl"
    amc.write_text("".join(json.dumps({"id": i, "question": f"AMC {i}?", "answer": float(i)}) + "\n" for i in range(2)))
    return {"model": model, "train": train, "eval": evals, "amc": amc, "store": tmp_path / "store"}


@pytest.fixture
def controller(redis_client: redis.Redis, files: dict[str, Path]) -> Controller:
    return Controller(redis_client, files["store"], reload_timeout_s=5.0)


@pytest.fixture
def stub(controller: Controller) -> Iterator[controller_pb2_grpc.ControllerInternalServiceStub]:
    server = build_grpc_server(controller, "127.0.0.1:0")
    server.start()
    server.set_serving(True)
    assert check_health(f"127.0.0.1:{server.port}")
    with channel(f"127.0.0.1:{server.port}") as chan:
        yield controller_pb2_grpc.ControllerInternalServiceStub(chan)
    server.stop(0)


@pytest.fixture
def generator(redis_client: redis.Redis) -> Iterator[RecordingGenerator]:
    servicer = RecordingGenerator()
    server = ServiceServer("127.0.0.1:0", "semirl.v1.GeneratorService")
    server.add(generator_pb2_grpc.add_GeneratorServiceServicer_to_server, servicer)
    server.start()
    redis_client.set(keys.service_registration_key("generator", "gen-live"), f"127.0.0.1:{server.port}")
    redis_client.set(keys.service_registration_key("generator", "gen-dead"), "127.0.0.1:1")  # nothing listens there
    yield servicer
    server.stop(0)


def make_spec(files: dict[str, Path], name: str, *, interval: int | str, steps: int, evals: bool = False,
              **extra: Any) -> RunSpec:
    body: dict[str, Any] = {
        "name": name,
        "model": {"path": str(files["model"])},
        "data": {"train": {"path": str(files["train"])}},
        "sync": {"interval": interval},
        "train": {"steps": steps, "batch_prompts": BATCH},
        **extra,
    }
    if evals:
        body["data"]["eval"] = {"path": str(files["eval"]), "limit": EVAL_PROMPTS}
        body["eval"] = {"samples_per_prompt": 2, **body.get("eval", {})}
    return parse_run_spec(body, check_paths=True)


def tasks(client: redis.Redis, run_id: str, purpose: int = types_pb2.TASK_PURPOSE_TRAIN) -> list[types_pb2.PromptTask]:
    found = [types_pb2.PromptTask.FromString(f[PAYLOAD_FIELD]) for _id, f in client.xrange(keys.PROMPTS)]
    return [t for t in found if t.run_id == run_id and t.purpose == purpose]


def submit(controller: Controller, spec: RunSpec) -> str:
    """Queue a run and run the scheduler once, as the loop's next round would: the run starts if it can."""
    run_id = controller.submit(spec).id
    controller.schedule()
    return run_id


def write_policy(store: Path, run_id: str, version: int, *, final: bool = False) -> Path:
    checkpoints = RunCheckpoints(store, run_id)
    with staged_directory(checkpoints.policy_dir(version), {"step": version}) as staging:
        (staging / "config.json").write_text("{}")
        (staging / "model.safetensors").write_bytes(bytes([version % 256]) * 64)
    if final:
        with staged_directory(checkpoints.final_dir) as staging:
            (staging / "model.safetensors").write_bytes(bytes([version % 256]) * 64)
    return checkpoints.policy_dir(version)


def commit(stub: Any, run_id: str, path: Path, version: int, final: bool = False) -> Any:
    request = controller_pb2.CommitCheckpointRequest(
        run_id=run_id, policy=types_pb2.PolicyRef(version=version, path=str(path)), final=final)
    return stub.CommitCheckpoint(request, timeout=30)


def score_evals(client: redis.Redis, run_id: str, step: int, correct_per_prompt: list[int], *,
                eval_set: str = "eval", returned: dict[int, int] | None = None) -> None:
    """Publish the scored groups of one set's round as the verifier would: prompt i gets `correct_per_prompt[i]`
    correct samples; `returned` {i: m} makes prompt i's generation come back with only m samples."""
    for task in tasks(client, run_id, types_pb2.TASK_PURPOSE_EVAL):
        if task.eval_step != step or task.eval_set != eval_set:
            continue
        index = int(task.prompt_id.rsplit("-", 1)[1])
        n = (returned or {}).get(index, task.sampling.n)
        correct = min(n, correct_per_prompt[index])
        rewards = [1.0] * correct + [0.0] * (n - correct)
        group = types_pb2.SampleGroup(task=task, policy_version=task.policy.version,
                                      samples=[types_pb2.Sample(token_ids=[1] * (4 + index)) for _ in range(n)])
        publish(client, keys.EVAL_SCORED, types_pb2.ScoredGroup(group=group, rewards=rewards))


def test_semi_online_windows_wait_for_commits_and_fan_out_reloads(
    controller: Controller, stub: Any, generator: RecordingGenerator, redis_client: redis.Redis,
    files: dict[str, Path],
) -> None:
    pubsub = redis_client.pubsub()
    pubsub.subscribe(keys.RELOAD_CHANNEL)
    run_id = submit(controller, make_spec(files, "semi", interval=2, steps=6))
    record = load_run(redis_client, run_id)
    assert record.state == "running" and redis_client.get(keys.ACTIVE_RUN).decode() == run_id
    released = tasks(redis_client, run_id)
    assert sorted(t.prompt_id for t in released) == ["t1-0", "t1-1", "t2-0", "t2-1"]
    assert {(t.policy.version, t.policy.path) for t in released} == {(0, str(files["model"].resolve()))}

    # The loop alone never releases window 1: version 2 is not committed yet.
    controller.tick()
    assert len(tasks(redis_client, run_id)) == 4
    report = controller_pb2.StepReport(run_id=run_id, step=1, metrics={"loss": 1.0})
    assert stub.ReportStep(report, timeout=10).cancelled is False

    v2 = write_policy(files["store"], run_id, 2)
    response = commit(stub, run_id, v2, 2)
    assert response.committed, response.error
    record = load_run(redis_client, run_id)
    assert (record.policy_version, record.generation_version, record.syncs) == (2, 2, 1)
    assert record.policy_path == str(v2) and record.windows_released == 2
    window1 = [t for t in tasks(redis_client, run_id) if t.window == 1]
    assert sorted(t.prompt_id for t in window1) == ["t3-0", "t3-1", "t4-0", "t4-1"]
    assert {(t.policy.version, t.policy.path) for t in window1} == {(2, str(v2))}
    assert controller.reloads.wait_idle(10)
    assert [(r.run_id, r.policy.version, r.policy.path) for r in generator.reloads] == [(run_id, 2, str(v2))]
    assert {o.generator_id: o.ok for o in controller.last_reload} == {"gen-live": True, "gen-dead": False}
    notice = None
    deadline = time.monotonic() + 5
    while notice is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message and message["type"] == "message":
            notice = generator_pb2.ReloadRequest.FromString(message["data"])
    assert notice is not None and notice.policy.version == 2 and notice.run_id == run_id

    # The first step trained on v2 carries the generators' load time of it; steps inside a window do not.
    for step in (2, 3, 4):
        stub.ReportStep(controller_pb2.StepReport(run_id=run_id, step=step, metrics={"loss": 1.0}), timeout=10)
    metrics = {m["step"]: m for m in controller.run_store.metrics(run_id)}
    assert metrics[3]["reload_s"] == pytest.approx(0.01) and "reload_s" not in metrics[2] | metrics[4]

    # A repeated commit (trainer retry) changes nothing.
    assert commit(stub, run_id, v2, 2).committed
    assert len(tasks(redis_client, run_id)) == 8 and load_run(redis_client, run_id).syncs == 1

    v4 = write_policy(files["store"], run_id, 4)
    assert commit(stub, run_id, v4, 4).committed
    assert {t.policy.version for t in tasks(redis_client, run_id) if t.window == 2} == {4}
    v6 = write_policy(files["store"], run_id, 6, final=True)
    response = commit(stub, run_id, v6, 6, final=True)
    assert response.committed, response.error
    record = load_run(redis_client, run_id)
    assert record.state == "succeeded" and record.syncs == 2 and record.generation_version == 4
    assert record.final_path == str(RunCheckpoints(files["store"], run_id).final_dir)
    assert len(tasks(redis_client, run_id)) == 12  # no window after the last
    assert controller.reloads.wait_idle(10)
    assert [r.policy.version for r in generator.reloads] == [2, 4]
    assert redis_client.get(keys.ACTIVE_RUN) is None
    pubsub.close()


def test_a_sync_waits_for_the_evaluation_of_an_older_version_before_it_fans_out(
    controller: Controller, stub: Any, generator: RecordingGenerator, redis_client: redis.Redis,
    files: dict[str, Path],
) -> None:
    """A Reload while generators still work through the seed's evaluation would make each swap to the new version
    and back (v2 -> v0 -> v2): the fan-out waits until that evaluation is in, and a newer sync replaces a waiting
    one. Windows are released as before; their tasks carry the version to load."""
    run_id = submit(controller, make_spec(files, "defer", interval=2, steps=6, evals=True, eval={"every": 6}))
    assert commit(stub, run_id, write_policy(files["store"], run_id, 2), 2).committed
    assert {t.policy.version for t in tasks(redis_client, run_id) if t.window == 1} == {2}
    assert commit(stub, run_id, write_policy(files["store"], run_id, 4), 4).committed
    assert {t.policy.version for t in tasks(redis_client, run_id) if t.window == 2} == {4}
    assert controller.reloads.wait_idle(10)
    assert generator.reloads == [] and load_run(redis_client, run_id).syncs == 2

    score_evals(redis_client, run_id, 0, [1, 1, 1])
    controller.tick()
    assert controller.reloads.wait_idle(10)
    assert [(r.run_id, r.policy.version) for r in generator.reloads] == [(run_id, 4)]  # only the newest
    wait_for(lambda: controller.run_store.syncs(run_id)[-1]["reload"] is not None, 10)
    first, second = controller.run_store.syncs(run_id)
    assert first["reload"] is None  # replaced before it fanned out
    assert second["policy_version"] == 4 and second["reload"]["ok"] == 1


def test_asynchronous_windows_run_k_ahead_and_every_commit_is_synced(
    controller: Controller, stub: Any, generator: RecordingGenerator, redis_client: redis.Redis,
    files: dict[str, Path],
) -> None:
    """max_staleness 1, s = 1: two windows are out from the start, each commit releases the next one and goes to
    the generators at once; tasks name the newest committed version and, as oldest_policy, what the step accepts."""
    spec = make_spec(files, "async", interval=1, steps=4, sync={"interval": 1, "max_staleness": 1})
    run_id = submit(controller, spec)
    released = tasks(redis_client, run_id)
    assert sorted(t.prompt_id for t in released) == ["t1-0", "t1-1", "t2-0", "t2-1"]
    assert {(t.policy.version, t.oldest_policy.version) for t in released} == {(0, 0)}
    assert all(t.HasField("oldest_policy") and not t.sampling.logprobs for t in released)
    controller.tick()
    assert len(tasks(redis_client, run_id)) == 4  # window 2 (step 3) accepts v1 at the oldest: not committed yet

    v1 = write_policy(files["store"], run_id, 1)
    assert commit(stub, run_id, v1, 1).committed
    window2 = [t for t in tasks(redis_client, run_id) if t.window == 2]
    assert {(t.train_step, t.policy.version, t.oldest_policy.version) for t in window2} == {(3, 1, 1)}
    assert {t.oldest_policy.path for t in window2} == {str(v1)}
    record = load_run(redis_client, run_id)
    assert (record.generation_version, record.syncs, record.windows_released) == (1, 1, 3)
    assert controller.reloads.wait_idle(10)
    assert [r.policy.version for r in generator.reloads] == [1]

    v2 = write_policy(files["store"], run_id, 2)
    assert commit(stub, run_id, v2, 2).committed
    assert {(t.train_step, t.policy.version, t.oldest_policy.version)
            for t in tasks(redis_client, run_id) if t.window == 3} == {(4, 2, 2)}
    v3 = write_policy(files["store"], run_id, 3)
    assert commit(stub, run_id, v3, 3).committed  # every window is out: the commit still reaches the generators
    assert controller.reloads.wait_idle(10)
    assert [r.policy.version for r in generator.reloads] == [1, 2, 3]
    assert len(tasks(redis_client, run_id)) == 8 and load_run(redis_client, run_id).syncs == 3


def test_a_frozen_generator_delays_no_commit_and_no_other_generator(
    controller: Controller, stub: Any, generator: RecordingGenerator, redis_client: redis.Redis,
    files: dict[str, Path],
) -> None:
    frozen = FrozenGenerator()
    server = ServiceServer("127.0.0.1:0", "semirl.v1.GeneratorService")
    server.add(generator_pb2_grpc.add_GeneratorServiceServicer_to_server, frozen)
    server.start()
    redis_client.set(keys.service_registration_key("generator", "gen-frozen"), f"127.0.0.1:{server.port}")
    try:
        run_id = submit(controller, make_spec(files, "frozen", interval=1, steps=4))
        for version in (1, 2, 3):
            started = time.monotonic()
            assert commit(stub, run_id, write_policy(files["store"], run_id, version), version).committed
            assert time.monotonic() - started < 3.0  # the controller's reload timeout is 5 s
            wait_for(lambda v=version: [r.policy.version for r in generator.reloads][-1:] == [v], 10)
        assert load_run(redis_client, run_id).windows_released == 4
        # The frozen one still sits in its v1 load; v2 was replaced by v3 while it waited: no backlog.
        assert frozen.reloads == [] and not controller.reloads.wait_idle(0.1)
        frozen.thaw.set()
        assert controller.reloads.wait_idle(10)
        assert [r.policy.version for r in frozen.reloads] == [1, 3]
        assert {o.generator_id: o.ok for o in controller.last_reload} == {
            "gen-live": True, "gen-dead": False, "gen-frozen": True}
    finally:
        frozen.thaw.set()
        server.stop(0)


def test_submit_only_queues_and_the_loop_starts_the_run(
    controller: Controller, redis_client: redis.Redis, files: dict[str, Path]
) -> None:
    record = controller.submit(make_spec(files, "queued", interval=1, steps=2))
    assert record.state == "queued" and redis_client.xlen(keys.PROMPTS) == 0  # nothing built in the request
    controller.poll_s = 5.0  # the loop would sleep in its blocking read; the submit wakes it
    controller.start()
    try:
        record = controller.submit(make_spec(files, "second", interval=1, steps=2))
        wait_for(lambda: load_run(redis_client, record.id).state == "queued"
                 and len(tasks(redis_client, redis_client.get(keys.ACTIVE_RUN).decode())) == BATCH, 10)
    finally:
        controller.stop()


def test_corrupt_or_foreign_checkpoint_is_refused(
    controller: Controller, stub: Any, redis_client: redis.Redis, files: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The controller checks a commit's files by size (the writer hashed them); SEMIRL_VERIFY_ON_COMMIT=full hashes
    them again and refuses one rewritten at the same size."""
    run_id = submit(controller, make_spec(files, "corrupt", interval=2, steps=4))
    v2 = write_policy(files["store"], run_id, 2)
    original = (v2 / "model.safetensors").read_bytes()
    (v2 / "model.safetensors").write_bytes(original + b"\x00")  # torn or appended: another size
    response = commit(stub, run_id, v2, 2)
    assert not response.committed and "bytes, manifest says" in response.error
    (v2 / "model.safetensors").write_bytes(b"\x00" * len(original))  # same size, different bytes
    monkeypatch.setenv("SEMIRL_VERIFY_ON_COMMIT", "full")
    response = commit(stub, run_id, v2, 2)
    assert not response.committed and "does not match its" in response.error
    monkeypatch.delenv("SEMIRL_VERIFY_ON_COMMIT")
    (v2 / "model.safetensors").unlink()
    assert "missing" in commit(stub, run_id, v2, 2).error
    outside = tmp_path / "elsewhere" / "v2"
    with staged_directory(outside) as staging:
        (staging / "model.safetensors").write_bytes(b"x")
    response = commit(stub, run_id, outside, 2)
    assert not response.committed and "outside" in response.error
    unknown = commit(stub, "nope-00000000", v2, 2)
    assert not unknown.committed
    record = load_run(redis_client, run_id)
    assert (record.policy_version, record.windows_released, record.syncs) == (0, 1, 0)
    assert len(tasks(redis_client, run_id)) == 4

    # Rewritten correctly, it commits and the next window goes out.
    v2 = write_policy(files["store"], run_id, 2)
    assert commit(stub, run_id, v2, 2).committed
    assert load_run(redis_client, run_id).windows_released == 2


def test_final_commit_needs_a_valid_final_directory(
    controller: Controller, stub: Any, redis_client: redis.Redis, files: dict[str, Path]
) -> None:
    run_id = submit(controller, make_spec(files, "fin", interval=1, steps=1))
    v1 = write_policy(files["store"], run_id, 1)
    response = commit(stub, run_id, v1, 1, final=True)
    assert not response.committed and "final" in response.error
    write_policy(files["store"], run_id, 1, final=True)
    assert commit(stub, run_id, v1, 1, final=True).committed
    assert load_run(redis_client, run_id).state == "succeeded"


def test_retention_keeps_the_newest_versions(
    controller: Controller, stub: Any, redis_client: redis.Redis, files: dict[str, Path]
) -> None:
    spec = make_spec(files, "keep", interval=1, steps=6, checkpoint={"keep": 2})
    run_id = submit(controller, spec)
    checkpoints = RunCheckpoints(files["store"], run_id)
    for version in range(1, 6):
        assert commit(stub, run_id, write_policy(files["store"], run_id, version), version).committed
        assert checkpoints.policy_versions() == list(range(max(1, version - 1), version + 1))
    record = load_run(redis_client, run_id)
    assert record.generation_version == 5 and record.syncs == 5 and record.windows_released == 6


def test_retention_spares_versions_an_eval_round_still_needs(
    controller: Controller, stub: Any, redis_client: redis.Redis, files: dict[str, Path]
) -> None:
    spec = make_spec(files, "keepeval", interval=1, steps=6, evals=True, checkpoint={"keep": 1}, eval={"every": 2})
    run_id = submit(controller, spec)
    checkpoints = RunCheckpoints(files["store"], run_id)
    for version in range(1, 5):
        assert commit(stub, run_id, write_policy(files["store"], run_id, version), version).committed
    # v2's eval round is unscored, so v2 stays although keep=1; v4 is current.
    assert checkpoints.policy_versions() == [2, 4]
    score_evals(redis_client, run_id, 2, [1, 1, 1])
    score_evals(redis_client, run_id, 4, [1, 1, 1])
    controller.tick()
    assert commit(stub, run_id, write_policy(files["store"], run_id, 5), 5).committed
    assert checkpoints.policy_versions() == [5]


def test_the_best_evaluated_checkpoint_is_exported_beside_final(
    controller: Controller, stub: Any, redis_client: redis.Redis, files: dict[str, Path]
) -> None:
    """eval.best_by: the best result so far (not the last) is recorded and its policy exported to best/ as hard
    links of the committed version, which then survives that version's retention."""
    spec = make_spec(files, "best", interval=1, steps=6, evals=True, checkpoint={"keep": 1},
                     eval={"every": 2, "best_by": {"metric": "accuracy"}})
    run_id = submit(controller, spec)
    checkpoints = RunCheckpoints(files["store"], run_id)
    for version in range(1, 5):
        assert commit(stub, run_id, write_policy(files["store"], run_id, version), version).committed
    score_evals(redis_client, run_id, 0, [0, 0, 1])
    score_evals(redis_client, run_id, 2, [2, 2, 1])   # the best: 5 of 6
    score_evals(redis_client, run_id, 4, [1, 1, 1])
    for _ in range(3):
        controller.tick()
        controller.consume_evals()
    record = load_run(redis_client, run_id)
    assert [e.step for e in record.evals] == [0, 2, 4]
    assert record.best is not None and (record.best.step, record.best.metric) == (2, "accuracy")
    assert record.best.value == pytest.approx(5 / 6) and record.best.path == str(checkpoints.best_dir)
    exported = checkpoints.best_dir / "model.safetensors"
    assert exported.read_bytes() == bytes([2]) * 64
    assert exported.stat().st_nlink == 2  # a hard link of v2's file, no copy
    assert commit(stub, run_id, write_policy(files["store"], run_id, 5), 5).committed
    assert checkpoints.policy_versions() == [5] and exported.read_bytes() == bytes([2]) * 64  # v2 is gone, best/ stays


def test_best_by_must_name_an_evaluation_set(files: dict[str, Path]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        make_spec(files, "best", interval=1, steps=2, evals=True, eval={"best_by": {"eval_set": "nope"}})
    assert [tuple(e["loc"]) for e in info.value.errors()] == [("eval", "best_by", "eval_set")]


def test_offline_releases_one_window_and_never_reloads(
    controller: Controller, stub: Any, generator: RecordingGenerator, redis_client: redis.Redis,
    files: dict[str, Path],
) -> None:
    spec = make_spec(files, "off", interval="offline", steps=4, evals=True, checkpoint={"every": 2})
    run_id = submit(controller, spec)
    train = tasks(redis_client, run_id)
    assert len(train) == 4 * BATCH and {t.policy.version for t in train} == {0} and {t.window for t in train} == {0}
    seed_eval = tasks(redis_client, run_id, types_pb2.TASK_PURPOSE_EVAL)
    assert [t.prompt_id for t in seed_eval] == ["e0-eval-0", "e0-eval-1", "e0-eval-2"]
    assert {t.policy.version for t in seed_eval} == {0} and {t.eval_set for t in seed_eval} == {"eval"}

    assert commit(stub, run_id, write_policy(files["store"], run_id, 2), 2).committed
    controller.tick()
    record = load_run(redis_client, run_id)
    assert record.policy_version == 2 and record.generation_version == 0 and record.syncs == 0
    assert len(tasks(redis_client, run_id)) == 4 * BATCH and generator.reloads == []

    score_evals(redis_client, run_id, 0, [0, 1, 2])
    v4 = write_policy(files["store"], run_id, 4, final=True)
    assert commit(stub, run_id, v4, 4, final=True).committed
    final_eval = [t for t in tasks(redis_client, run_id, types_pb2.TASK_PURPOSE_EVAL) if t.eval_step == 4]
    assert len(final_eval) == EVAL_PROMPTS and {(t.policy.version, t.policy.path) for t in final_eval} == {(4, str(v4))}
    assert len(tasks(redis_client, run_id)) == 4 * BATCH and generator.reloads == []
    controller.tick()
    assert load_run(redis_client, run_id).state == "running"  # the final round is not scored yet

    score_evals(redis_client, run_id, 4, [2, 2, 2])
    controller.tick()
    record = load_run(redis_client, run_id)
    assert record.state == "succeeded" and record.syncs == 0
    assert [(e.step, e.eval_set, e.policy_version, e.prompts, e.samples_expected, e.samples_scored)
            for e in record.evals] == [(0, "eval", 0, 3, 6, 6), (4, "eval", 4, 3, 6, 6)]
    assert record.evals[0].accuracy == pytest.approx(0.5) and record.evals[1].accuracy == pytest.approx(1.0)
    assert record.evals[0].mean_response_tokens == pytest.approx(5.0)


def test_cancel_stops_releases_and_the_next_run_starts(
    controller: Controller, stub: Any, redis_client: redis.Redis, files: dict[str, Path]
) -> None:
    first = submit(controller, make_spec(files, "one", interval=2, steps=4))
    second = submit(controller, make_spec(files, "two", interval=1, steps=2))
    assert load_run(redis_client, second).state == "queued" and tasks(redis_client, second) == []
    controller.cancel(first)
    controller.schedule()  # the loop's next round starts the queued run
    assert stub.ReportStep(controller_pb2.StepReport(run_id=first, step=1), timeout=10).cancelled is True
    response = commit(stub, first, write_policy(files["store"], first, 2), 2)
    assert not response.committed and "cancelled" in response.error
    assert len(tasks(redis_client, first)) == 4
    assert load_run(redis_client, second).state == "running"
    assert redis_client.get(keys.ACTIVE_RUN).decode() == second
    assert {t.policy.version for t in tasks(redis_client, second)} == {0}


def test_succeeded_run_hands_over_to_the_next_queued_run(
    controller: Controller, stub: Any, redis_client: redis.Redis, files: dict[str, Path]
) -> None:
    first = submit(controller, make_spec(files, "a", interval=1, steps=1, evals=True))
    second = submit(controller, make_spec(files, "b", interval=1, steps=1))
    score_evals(redis_client, first, 0, [2, 0, 0])
    v1 = write_policy(files["store"], first, 1, final=True)
    assert commit(stub, first, v1, 1, final=True).committed
    assert load_run(redis_client, second).state == "queued"
    score_evals(redis_client, first, 1, [2, 2, 0])
    controller.tick()
    assert load_run(redis_client, first).state == "succeeded"
    assert load_run(redis_client, second).state == "running"
    assert [e.step for e in load_run(redis_client, first).evals] == [0, 1]


def test_restarted_controller_resumes_from_redis(
    controller: Controller, stub: Any, redis_client: redis.Redis, files: dict[str, Path]
) -> None:
    run_id = submit(controller, make_spec(files, "restart", interval=2, steps=6))
    # A fresh controller over the same Redis re-derives the state and releases nothing twice.
    again = Controller(redis_client, files["store"])
    again.tick()
    assert len(tasks(redis_client, run_id)) == 4
    # Crash between recording a commit and releasing the window: the next controller releases it.
    write_policy(files["store"], run_id, 2)
    record = load_run(redis_client, run_id)
    record.policy_version, record.policy_path = 2, str(RunCheckpoints(files["store"], run_id).policy_dir(2))
    save_run(redis_client, record)
    third = Controller(redis_client, files["store"])
    third.tick()
    record = load_run(redis_client, run_id)
    assert record.windows_released == 2 and record.syncs == 1 and record.generation_version == 2
    assert sorted(t.prompt_id for t in tasks(redis_client, run_id) if t.window == 1) == [
        "t3-0", "t3-1", "t4-0", "t4-1"]


def test_background_loop_collects_evals(controller: Controller, redis_client: redis.Redis,
                                        files: dict[str, Path]) -> None:
    run_id = submit(controller, make_spec(files, "loop", interval=1, steps=2, evals=True))
    controller.poll_s = 0.1
    controller.start()
    try:
        score_evals(redis_client, run_id, 0, [1, 1, 1])
        deadline = time.monotonic() + 10
        while not load_run(redis_client, run_id).evals and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [e.step for e in load_run(redis_client, run_id).evals] == [0]
        assert threading.active_count() >= 2
    finally:
        controller.stop()



def test_several_eval_sets_are_released_and_reported_separately(
    controller: Controller, stub: Any, redis_client: redis.Redis, files: dict[str, Path]
) -> None:
    spec = make_spec(files, "sets", interval=1, steps=1, evals=True)
    data = spec.data.model_dump()
    data["eval"].append({"path": str(files["amc"]), "samples_per_prompt": 4, "answer_format": "boxed"})
    run_id = submit(controller, parse_run_spec({**spec.model_dump(mode="json"), "data": data}))
    seed_round = tasks(redis_client, run_id, types_pb2.TASK_PURPOSE_EVAL)
    assert sorted(t.prompt_id for t in seed_round) == [
        "e0-amc23-0", "e0-amc23-1", "e0-eval-0", "e0-eval-1", "e0-eval-2"]
    assert {(t.eval_set, t.sampling.n, t.answer_format) for t in seed_round} == {
        ("eval", 2, types_pb2.ANSWER_FORMAT_LATEX), ("amc23", 4, types_pb2.ANSWER_FORMAT_BOXED)}
    assert [t.gold_answer for t in seed_round if t.eval_set == "amc23"] == ["0", "1"]

    # One set being in does not make the round complete: each set is its own result.
    score_evals(redis_client, run_id, 0, [2, 2, 0], eval_set="eval")
    controller.tick()
    assert [(e.step, e.eval_set) for e in load_run(redis_client, run_id).evals] == [(0, "eval")]
    score_evals(redis_client, run_id, 0, [1, 3], eval_set="amc23")
    controller.tick()
    v1 = write_policy(files["store"], run_id, 1, final=True)
    assert commit(stub, run_id, v1, 1, final=True).committed
    score_evals(redis_client, run_id, 1, [4, 4], eval_set="amc23")
    controller.tick()
    assert load_run(redis_client, run_id).state == "running"  # the final round of "eval" is still out
    score_evals(redis_client, run_id, 1, [2, 2, 2], eval_set="eval")
    controller.tick()
    record = load_run(redis_client, run_id)
    assert record.state == "succeeded"
    assert [(e.step, e.eval_set, e.prompts, e.samples_per_prompt, e.samples_expected) for e in record.evals] == [
        (0, "eval", 3, 2, 6), (0, "amc23", 2, 4, 8), (1, "eval", 3, 2, 6), (1, "amc23", 2, 4, 8)]
    accuracy = {(e.step, e.eval_set): e.accuracy for e in record.evals}
    assert accuracy == pytest.approx({(0, "eval"): 4 / 6, (0, "amc23"): 4 / 8, (1, "eval"): 1.0, (1, "amc23"): 1.0})
    stderr = {(e.step, e.eval_set): e.stderr for e in record.evals}
    assert stderr[(0, "eval")] == pytest.approx(statistics.stdev([1.0, 1.0, 0.0]) / math.sqrt(3))
    assert stderr[(0, "amc23")] == pytest.approx(statistics.stdev([0.25, 0.75]) / math.sqrt(2))
    assert stderr[(1, "eval")] == pytest.approx(0.0)


def test_failed_eval_generations_count_as_wrong_and_the_round_completes(
    controller: Controller, stub: Any, redis_client: redis.Redis, files: dict[str, Path]
) -> None:
    run_id = submit(controller, make_spec(files, "failed", interval=1, steps=1, evals=True))
    # Every sample that came back is correct, but prompt 1's task could never be served (an empty group,
    # decision 10) and prompt 2's came back with one of its two samples.
    score_evals(redis_client, run_id, 0, [2, 2, 2], returned={1: 0, 2: 1})
    controller.tick()
    (seed,) = load_run(redis_client, run_id).evals
    assert seed.accuracy == pytest.approx(3 / 6)  # not 3/3: the denominator is prompts x samples asked
    assert (seed.prompts, seed.samples_expected, seed.samples_scored, seed.failed_prompts) == (3, 6, 3, 2)
    assert seed.stderr == pytest.approx(statistics.stdev([1.0, 0.0, 0.5]) / math.sqrt(3))
    v1 = write_policy(files["store"], run_id, 1, final=True)
    assert commit(stub, run_id, v1, 1, final=True).committed
    score_evals(redis_client, run_id, 1, [2, 2, 2])
    controller.tick()
    record = load_run(redis_client, run_id)
    assert record.state == "succeeded" and record.evals[1].accuracy == pytest.approx(1.0)
    assert record.evals[1].failed_prompts == 0


@pytest.mark.parametrize("stored", [b"{not json", b'{"id": "x"}'], ids=["garbage", "no-spec"])
def test_unreadable_records_are_dropped_and_the_next_run_starts(
    controller: Controller, stub: Any, redis_client: redis.Redis, files: dict[str, Path], stored: bytes
) -> None:
    active = submit(controller, make_spec(files, "broken", interval=1, steps=2))
    queued = submit(controller, make_spec(files, "broken2", interval=1, steps=2))
    waiting = submit(controller, make_spec(files, "next", interval=1, steps=2))
    redis_client.set(keys.run_key(active), stored)
    redis_client.set(keys.run_key(queued), stored)

    controller.tick()  # does not raise: both unreadable runs are skipped and the third one starts
    assert redis_client.get(keys.ACTIVE_RUN).decode() == waiting
    assert load_run(redis_client, waiting).state == "running"
    assert redis_client.llen(keys.RUN_QUEUE) == 0
    assert {t.run_id for t in tasks(redis_client, waiting)} == {waiting}
    assert redis_client.get(keys.run_key(active)) == stored  # left as it was, for inspection

    # The unreadable run's trainer is told to stop; its commits are refused; FailRun does nothing.
    assert stub.ReportStep(controller_pb2.StepReport(run_id=active, step=1), timeout=10).cancelled is True
    response = commit(stub, active, write_policy(files["store"], active, 1), 1)
    assert not response.committed and "unreadable" in response.error
    assert controller.fail(active, "boom") is False
    controller.tick()
    assert redis_client.get(keys.ACTIVE_RUN).decode() == waiting


def test_loop_counts_failing_ticks_and_recovers(controller: Controller, monkeypatch: pytest.MonkeyPatch) -> None:
    controller.poll_s, controller.retry_s = 0.01, 0.01
    broken = threading.Event()
    broken.set()
    real_tick = controller.tick

    def tick(block_ms: int = 0) -> None:
        if broken.is_set():
            raise RuntimeError("tick exploded")
        real_tick(block_ms)

    monkeypatch.setattr(controller, "tick", tick)
    controller.start()
    try:
        deadline = time.monotonic() + 10
        while controller.tick_problem() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        problem = controller.tick_problem()
        assert problem is not None and "tick exploded" in problem and controller.running
        broken.clear()
        deadline = time.monotonic() + 10
        while controller.tick_problem() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert controller.tick_problem() is None and controller.tick_failures == 0
    finally:
        controller.stop()


def test_a_redis_outage_answers_unavailable_so_the_trainer_retries(files: dict[str, Path], tmp_path: Path) -> None:
    """While Redis is down the controller's RPCs answer UNAVAILABLE (what the trainer retries with backoff), not
    UNKNOWN (an application error that failed the trainer's attempt at the run: tests/faults found it)."""
    server = start_redis(tmp_path / "redis", append_only=False)
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1.0, socket_timeout=1.0)
    controller = Controller(client, files["store"])
    run_id = submit(controller, make_spec(files, "outage", interval=1, steps=2))
    grpc_server = build_grpc_server(controller, "127.0.0.1:0")
    grpc_server.start()
    try:
        with channel(f"127.0.0.1:{grpc_server.port}") as chan:
            stub = controller_pb2_grpc.ControllerInternalServiceStub(chan)
            server.stop()
            with pytest.raises(grpc.RpcError) as err:
                stub.ReportStep(controller_pb2.StepReport(run_id=run_id, step=1), timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "Redis" in err.value.details()
    finally:
        grpc_server.stop(0)
        client.close()
