"""Fixtures of the Helm chart tests: each scenario (values file) rendered once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chartlib import SCENARIOS, Manifest, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, Manifest]:
    """Every scenario rendered once per session."""
    return {name: render(s.values, api_versions=s.api_versions) for name, s in SCENARIOS.items()}


@pytest.fixture(scope="session", params=list(SCENARIOS))
def scenario(request: pytest.FixtureRequest, rendered: dict[str, Manifest]) -> Iterator[tuple[str, Manifest]]:
    yield request.param, rendered[request.param]


@pytest.fixture(scope="session")
def default(rendered: dict[str, Manifest]) -> Manifest:
    return rendered["default"]


@pytest.fixture(scope="session")
def production(rendered: dict[str, Manifest]) -> Manifest:
    return rendered["gpu-production"]


@pytest.fixture(scope="session")
def autoscaled(rendered: dict[str, Manifest]) -> Manifest:
    return rendered["autoscaling"]


@pytest.fixture(scope="session")
def cpu(rendered: dict[str, Manifest]) -> Manifest:
    return rendered["cpu"]


@pytest.fixture(scope="session")
def gpu(rendered: dict[str, Manifest]) -> Manifest:
    return rendered["gpu"]
