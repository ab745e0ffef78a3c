"""The real multi-process stack for end-to-end tests: embedded redis-server, controller, two vLLM generators,
a math-verify verifier and a DeepSpeed trainer, each its own OS process, on free loopback ports (the shared
fixtures are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from semirl.local.stack import LocalStack


@pytest.fixture(scope="module")
def stack(start_stack: Callable[..., AbstractContextManager[LocalStack]]) -> Iterator[LocalStack]:
    with start_stack("stack", generators=2, verifiers=1) as local:
        yield local
