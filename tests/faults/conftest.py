"""One stack for the fault suite: redis-server, the controller, two generators, two verifiers (so one can take
over a killed one's work) and the trainer, each its own OS process (the shared fixtures are in tests/conftest.py).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from semirl.client import ControllerClient
from semirl.core.runstate import active_run_id
from semirl.local.stack import LocalStack

# A killed worker's unacked entries are taken over after this long: short, so that happens within a test.
VISIBILITY_TIMEOUT_S = 5


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[LocalStack]]) -> Iterator[LocalStack]:
    with start_stack("fault-stack", generators=2, verifiers=2,
                     extra_env={"SEMIRL_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S)}) as local:
        yield local


@pytest.fixture(autouse=True)
def whole_stack(stack: LocalStack, client: ControllerClient) -> Iterator[None]:
    """Every test starts with the whole stack up and no active run, whatever an earlier (failed) test left."""
    if stack.redis is None or stack.redis.process.poll() is not None:
        stack.restart_redis()
    for service in stack.services.values():
        service.signal(signal.SIGCONT)  # a test that failed while a service was frozen
        if not service.alive:
            service.start(stack.env())
    stack.wait_healthy()
    assert stack.redis is not None
    run_id = active_run_id(stack.redis.client())
    if run_id:
        client.cancel(run_id)  # a run a failed test left running would hold up this test's run in the queue
    yield
