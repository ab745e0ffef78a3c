"""Step reports cost O(1) in the run's length: the controller keeps the group counters incrementally, and a
replay after a trainer restart reads only the reports it replaces. Real redis-server and Controller.

Cost is measured in bytes the Redis server sends back (its `total_net_output_bytes`), which is what a report
reads and does not depend on how busy this machine is.
"""

from __future__ import annotations

from pathlib import Path

import redis
from google.protobuf import json_format

from semirl.controller.controller import Controller
from semirl.core import keys
from semirl.core.runstate import load_run
from semirl.proto import controller_pb2
from semirl.spec import parse_run_spec

STEPS = 10_000


def _report(run_id: str, step: int) -> controller_pb2.StepReport:
    return controller_pb2.StepReport(run_id=run_id, step=step, metrics={"loss": 1.0 / step}, groups=[
        controller_pb2.GroupUse(prompt_id=f"t{step}-0", trained=True),
        controller_pb2.GroupUse(prompt_id=f"t{step}-1", trained=False, skip_reason="all_same"),
    ])


def _bytes_sent(client: redis.Redis) -> int:
    return int(client.info("stats")["total_net_output_bytes"])


def test_ten_thousand_step_reports_each_cost_the_same(
    controller: Controller, redis_client: redis.Redis, files: dict[str, Path]
) -> None:
    spec = parse_run_spec({"name": "long", "model": {"path": str(files["model"])},
                           "data": {"train": {"path": str(files["train"])}}, "sync": {"interval": 1},
                           "train": {"steps": STEPS, "batch_prompts": 2}}, check_paths=True)
    run_id = controller.submit(spec).id
    controller.schedule()
    read_per_block = []
    for block in range(0, STEPS, 1000):
        before = _bytes_sent(redis_client)
        for step in range(block + 1, block + 1001):
            assert controller.report_step(_report(run_id, step)) is False
        read_per_block.append(_bytes_sent(redis_client) - before)
    # The last thousand reports read what the first thousand did (reading every earlier report, the last
    # block would read ~19x the first).
    assert max(read_per_block) < 1.2 * min(read_per_block), read_per_block
    record = load_run(redis_client, run_id)
    assert record.step == STEPS and record.counters == {"groups_trained": STEPS, "groups_skipped": STEPS}

    # A trainer resumed from step 9,990 replays 9,991 on: the counters stay exact and only the replaced
    # reports are read.
    before = _bytes_sent(redis_client)
    assert controller.report_step(_report(run_id, 9_991)) is False
    one_report = read_per_block[0] / 1000
    stored = len(json_format.MessageToJson(_report(run_id, 9_991), indent=None))
    replay = _bytes_sent(redis_client) - before
    assert replay < 2 * one_report + 2 * 10 * stored  # the 10 replaced reports, not the 10,000 stored
    record = load_run(redis_client, run_id)
    assert record.step == 9_991 and record.counters == {"groups_trained": 9_991, "groups_skipped": 9_991}
    assert redis_client.llen(keys.run_steps_key(run_id)) == 9_991
