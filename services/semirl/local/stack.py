"""The local stack: embedded Redis plus every service as its own OS process, one log file each.

Used by `semirl up`, `semirl demo` and the end-to-end tests. Processes are started in their own process
groups so that stopping the stack (or a test killing one service) takes their children (vLLM's engine
core, DeepSpeed's helpers) with them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from semirl.core.grpc_server import check_health
from semirl.core.redis_server import EmbeddedRedis, free_port, start_redis

log = logging.getLogger(__name__)

# Defaults that keep several services civil on a small CPU-only machine; a user's own env wins.
CPU_ENV_DEFAULTS = {
    "DS_ACCELERATOR": "cpu",
    # One compute thread per process: with several services on two cores, torch's default (all cores per
    # process) oversubscribes them; a DPO step measured ~10x faster this way.
    "OMP_NUM_THREADS": "1",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


@dataclass
class ServiceProcess:
    name: str
    module: str
    args: list[str]
    grpc_port: int
    log_path: Path
    process: subprocess.Popen | None = None
    extra_env: dict[str, str] = field(default_factory=dict)  # this service's own settings, over the stack's
    metrics_port: int | None = None  # its Prometheus exporter, when the stack was started with `metrics`

    @property
    def metrics_url(self) -> str | None:
        return f"http://127.0.0.1:{self.metrics_port}/metrics" if self.metrics_port else None

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**env, **self.extra_env},
            start_new_session=True,
        )
        handle.close()

    def signal(self, signum: int) -> None:
        if self.alive:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait()
        # Children left in the group (e.g. an engine process) go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, not a shutdown."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()


# Slowest to become ready first: on two cores the generator's vLLM import and engine build (~13 s) are the stack's
# critical path, and the processes started after it only share the cores it leaves.
START_ORDER = ("generator-", "reward-", "trainer", "verifier-", "controller")


def _start_order(service: ServiceProcess) -> int:
    return next((i for i, prefix in enumerate(START_ORDER) if service.name.startswith(prefix)), len(START_ORDER))


@dataclass
class LocalStack:
    workdir: Path
    store: Path
    http_port: int = 8080
    generators: int = 1
    verifiers: int = 1
    trainer_ranks: int = 1
    # e.g. --model/--dtype/--max-model-len of the run to come: the engine is built at start-up, not on its first task
    generator_args: list[str] = field(default_factory=list)
    # the reward service's arguments (--model PATH, ...): one reward service starts when they are given
    reward_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    # every service exports Prometheus metrics on a free port of its own (`semirl sweep` reads the generators')
    metrics: bool = False
    redis: EmbeddedRedis | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def env(self) -> dict[str, str]:
        env = {**CPU_ENV_DEFAULTS, **os.environ, **self.extra_env}
        assert self.redis is not None
        env["SEMIRL_REDIS_URL"] = self.redis.url
        env["SEMIRL_STORE"] = str(self.store)
        return env

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self, timeout: float = 240.0) -> LocalStack:
        """Start everything and wait until healthy; on any failure, stop what was started and re-raise."""
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> LocalStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store.mkdir(parents=True, exist_ok=True)
        self.redis = start_redis(self.workdir / "redis")
        controller_grpc = free_port()
        self._add(
            "controller",
            "semirl.controller",
            ["--host", "127.0.0.1", "--port", str(self.http_port), "--store", str(self.store)],
            grpc_port=controller_grpc,
        )
        for index in range(self.generators):
            self.add_generator(index)
        for index in range(self.verifiers):
            self._add(f"verifier-{index}", "semirl.verifier", ["--verifier-id", f"verifier-{index}"])
        if self.reward_args:
            self._add("reward-0", "semirl.reward", ["--reward-id", "reward-0", *self.reward_args])
        trainer = self._add(
            "trainer",
            "semirl.trainer",
            ["--store", str(self.store), "--controller", f"127.0.0.1:{controller_grpc}", "--trainer-id", "trainer-0",
             "--transfer-port", str(free_port())],
        )
        if self.trainer_ranks > 1:
            # The trainer's launcher starts one process per rank (gloo on the CPU); rank 0 serves the gRPC port.
            trainer.extra_env = {"SEMIRL_TRAINER_LOCAL_RANKS": str(self.trainer_ranks),
                                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
        for service in sorted(self.services.values(), key=_start_order):
            service.start(self.env())
        self.wait_healthy(timeout)
        return self

    def _add(self, name: str, module: str, args: list[str], grpc_port: int | None = None) -> ServiceProcess:
        port = grpc_port or free_port()
        metrics_port = free_port() if self.metrics else None
        metrics_args = ["--metrics-port", str(metrics_port)] if metrics_port else []
        service = ServiceProcess(name, module, [*args, "--grpc-port", str(port), *metrics_args], port,
                                 self.logs / f"{name}.log", metrics_port=metrics_port)
        self.services[name] = service
        return service

    def metrics_urls(self, prefix: str) -> list[str]:
        """The /metrics URLs of the services whose names start with `prefix` (e.g. "generator-")."""
        return [url for name, service in self.services.items()
                if name.startswith(prefix) and (url := service.metrics_url) is not None]

    def add_generator(self, index: int | None = None, *, start: bool = False) -> ServiceProcess:
        index = index if index is not None else sum(1 for n in self.services if n.startswith("generator-"))
        name = f"generator-{index}"
        service = self._add(name, "semirl.generator", ["--generator-id", name, *self.generator_args])
        if start:
            service.start(self.env())
        return service

    def restart(self, name: str, *, crash: bool = False) -> None:
        """Stop a service (SIGTERM; with `crash`, SIGKILL of its process group) and start it again with the same
        arguments and ports, so its peers find it where it was."""
        service = self.services[name]
        if crash:
            service.kill()
        else:
            service.stop()
        service.start(self.env())

    def restart_redis(self) -> None:
        """Start redis-server again on the same port from its append-only file (SIGTERM first if it still runs;
        `self.redis.crash()` before this for a crash): the services keep their URL and reconnect."""
        assert self.redis is not None
        self.redis = self.redis.restart()

    def wait_healthy(self, timeout: float = 240.0, names: list[str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        pending = set(names or self.services)
        while pending:
            for name in sorted(pending):
                service = self.services[name]
                if not service.alive:
                    raise RuntimeError(f"{name} exited during start-up; see {service.log_path}\n{self.tail(name)}")
                if check_health(service.grpc_target, timeout=1.0):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"services not healthy after {timeout:.0f}s: {sorted(pending)}")
            if pending:
                time.sleep(0.5)
        self._wait_http(deadline)

    def _wait_http(self, deadline: float) -> None:
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"controller REST API not answering at {self.url}")
            time.sleep(0.3)

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.services[name].log_path
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def dump_logs(self, lines: int = 40) -> str:
        """The last lines of every service's log, for failure messages."""
        return "\n".join(f"--- {name}\n{self.tail(name, lines)}" for name in self.services)

    def stop(self) -> None:
        # Workers first so nothing is mid-write to Redis when it goes.
        for name in sorted(self.services, key=lambda n: n == "controller"):
            self.services[name].stop()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
