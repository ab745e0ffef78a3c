"""The local stack starts its slowest service first (local/stack.py, START_ORDER): on two cores the generator's
vLLM import and engine build are the stack's critical path, so every other process starts after it."""

from __future__ import annotations

from pathlib import Path

from semirl.local.stack import ServiceProcess, _start_order


def service(name: str) -> ServiceProcess:
    return ServiceProcess(name, f"semirl.{name}", [], 0, Path(f"{name}.log"))


def test_generators_start_first_and_the_controller_last() -> None:
    added = ["controller", "generator-0", "generator-1", "verifier-0", "reward-0", "trainer"]
    started = [s.name for s in sorted((service(n) for n in added), key=_start_order)]
    assert started == ["generator-0", "generator-1", "reward-0", "trainer", "verifier-0", "controller"]


def test_an_unknown_service_starts_after_the_known_ones() -> None:
    started = [s.name for s in sorted((service(n) for n in ["extra", "controller", "generator-0"]), key=_start_order)]
    assert started == ["generator-0", "controller", "extra"]
