"""A service (`python -m semirl.<service>`) as a real process for integration tests: start it on a free gRPC port,
wait for its gRPC health, and on exit stop it with SIGTERM and check it exits cleanly. A sibling module: pytest
puts this folder on sys.path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from semirl.core.grpc_server import check_health
from semirl.core.redis_server import free_port


@dataclass
class ServiceProcess:
    process: subprocess.Popen
    target: str
    log_path: Path

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@contextmanager
def running_service(
    service: str, redis_url: str, log_dir: Path, args: list[str], *, env: dict[str, str] | None = None,
    start_timeout_s: float = 60.0, poll_s: float = 0.2, stop_timeout_s: float = 20.0,
) -> Iterator[ServiceProcess]:
    port = free_port()
    log_path = log_dir / f"{service}.log"
    with log_path.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", f"semirl.{service}", "--redis-url", redis_url, "--grpc-port", str(port), *args],
            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    running = ServiceProcess(process, f"127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + start_timeout_s
    while not check_health(running.target, timeout=1.0):
        assert process.poll() is None, f"{service} exited early:\n{running.tail()}"
        assert time.monotonic() < deadline, f"{service} not healthy:\n{running.tail()}"
        time.sleep(poll_s)
    try:
        yield running
    finally:  # stopped even when the body failed, so no process outlives its test
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=stop_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"{service} ignored SIGTERM:\n{running.tail()}")
    assert process.returncode == 0, running.tail()
