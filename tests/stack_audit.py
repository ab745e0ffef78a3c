"""What a run left in Redis, checked against the delivery contract (docs/architecture.md, decisions 1 and 3).

The identity, for a finished run: the training prompts the controller released (every step of every released
window × `train.batch_prompts`, ids "t{step}-{slot}") are exactly the groups its stored step reports list as
trained or skipped (`GroupUse.trained`, or a `skip_reason` not starting with "dropped"), each once. Groups listed
as dropped ("dropped_<reason>": a redelivered or replayed entry acked without training) are extra deliveries of
released prompts, never a use. The controller's counters say the same: groups_trained + groups_skipped =
released (groups_dropped counts the dropped listings apart). And no stage forwarded a prompt twice: the prompts,
to_verify, scored and eval_scored streams hold at most one entry per (run, prompt id). Streams lose old acked
entries to trimming, so the lost-nothing half is read from step reports and the stages' done sets, which stay.
Shared by tests/e2e and tests/faults (tests/ is on sys.path through tests/conftest.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import redis
from google.protobuf import json_format

from semirl.core import keys
from semirl.core.runstate import RunRecord, load_run
from semirl.core.streams import PAYLOAD_FIELD
from semirl.core.wire import train_prompt_id
from semirl.proto import controller_pb2, types_pb2

STAGES = (("generate",), ("verify", "reward"))  # the done sets (keys.done_key(run, stage)), scorers together
TASK_OF_ENTRY: dict[str, Callable[[bytes], types_pb2.PromptTask]] = {
    keys.PROMPTS: types_pb2.PromptTask.FromString,
    keys.TO_VERIFY: lambda raw: types_pb2.SampleGroup.FromString(raw).task,
    keys.TO_REWARD: lambda raw: types_pb2.SampleGroup.FromString(raw).task,
    keys.SCORED: lambda raw: types_pb2.ScoredGroup.FromString(raw).group.task,
    keys.EVAL_SCORED: lambda raw: types_pb2.ScoredGroup.FromString(raw).group.task,
}


def step_reports(client: redis.Redis, run_id: str) -> list[controller_pb2.StepReport]:
    raw = client.lrange(keys.run_steps_key(run_id), 0, -1)
    return [json_format.Parse(r, controller_pb2.StepReport(), ignore_unknown_fields=True) for r in raw]


def released_prompt_ids(record: RunRecord) -> list[str]:
    """The training prompts of the windows the controller has released for the run."""
    spec = record.spec
    return [train_prompt_id(step, slot) for window in range(record.windows_released)
            for step in spec.window_steps(window) for slot in range(spec.train.batch_prompts)]


def stream_prompt_ids(client: redis.Redis, stream: str, run_id: str) -> Counter[str]:
    """How many entries of `stream` (still there: trimming drops old acked ones) carry each prompt of the run."""
    task_of = TASK_OF_ENTRY[stream]
    tasks = (task_of(fields[PAYLOAD_FIELD]) for _id, fields in client.xrange(stream))
    return Counter(task.prompt_id for task in tasks if task.run_id == run_id)


def assert_nothing_lost_nothing_twice(client: redis.Redis, run_id: str) -> RunRecord:
    """Check the identity above for a finished run, from Redis alone; returns the run's record."""
    record = load_run(client, run_id)
    assert record is not None and record.finished, f"run {run_id} has not finished: {record}"
    spec = record.spec
    assert record.windows_released == spec.num_windows, "not every window was released"
    released = released_prompt_ids(record)
    reports = step_reports(client, run_id)
    assert [r.step for r in reports] == list(range(1, spec.train.steps + 1)), "a step reported twice or never"
    uses = [group for report in reports for group in report.groups]
    dropped = [g for g in uses if g.skip_reason.startswith("dropped")]
    used = Counter(g.prompt_id for g in uses if not g.skip_reason.startswith("dropped"))
    lost = sorted(set(released) - set(used))
    twice = sorted(prompt for prompt, count in used.items() if count > 1)
    unreleased = sorted(set(used) - set(released))
    assert not (lost or twice or unreleased), (
        f"released = trained + skipped does not hold: never used {lost}, used twice {twice}, never released "
        f"{unreleased}")
    assert {g.prompt_id for g in dropped} <= set(released), "a dropped group of a prompt never released"
    counters = record.counters
    assert counters.get("groups_trained", 0) == sum(g.trained for g in uses)
    assert counters.get("groups_trained", 0) + counters.get("groups_skipped", 0) == len(released)
    assert counters.get("groups_dropped", 0) == len(dropped)
    for stages in STAGES:  # each prompt is scored by its own scorer: the verifier or the reward model
        done = {m.decode() for stage in stages for m in client.smembers(keys.done_key(run_id, stage))}
        assert set(released) <= done, f"{'/'.join(stages)} never forwarded {sorted(set(released) - done)}"
    for stream in TASK_OF_ENTRY:
        counts = stream_prompt_ids(client, stream, run_id)
        repeated = {prompt: count for prompt, count in counts.items() if count > 1}
        assert not repeated, f"{stream} holds prompts of {run_id} more than once: {repeated}"
    return record
