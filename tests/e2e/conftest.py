"""The real multi-process stack for end-to-end tests: embedded redis-server, controller, two vLLM generators,
a math-verify verifier and a DeepSpeed trainer, each its own OS process, on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from semirl.client import ControllerClient
from semirl.core.redis_server import free_port
from semirl.local.stack import LocalStack

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from semirl.tinymodel.build import build_tiny_setup

    cache = Path(os.environ.get("SEMIRL_TEST_TINY_DIR", REPO_ROOT / ".semirl" / "tiny"))
    return build_tiny_setup(cache, seed=0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_setup) -> Iterator[LocalStack]:  # noqa: ANN001
    workdir = tmp_path_factory.mktemp("stack")
    local = LocalStack(
        workdir=workdir,
        store=workdir / "store",
        http_port=free_port(),
        generators=2,
        verifiers=1,
        # Short visibility timeout so a killed generator's prompts are reclaimed within the test.
        extra_env={"SEMIRL_VISIBILITY_TIMEOUT_S": "5"},
    )
    try:
        local.start(timeout=300)
    except Exception:
        for name in local.services:
            print(f"--- {name}\n{local.tail(name, 60)}")
        local.stop()
        raise
    yield local
    local.stop()


@pytest.fixture
def client(stack: LocalStack) -> ControllerClient:
    return ControllerClient(stack.url)


@pytest.fixture
def write_spec(tmp_path: Path, tiny_setup) -> Callable[..., Path]:  # noqa: ANN001
    """Write a small DPO run spec on the tiny model; keyword arguments override sections."""

    def _write(name: str, *, interval: int | str, steps: int, batch_prompts: int = 8, **overrides: Any) -> Path:
        spec: dict[str, Any] = {
            "name": name,
            "algorithm": "dpo",
            "model": {"path": str(tiny_setup.model_dir), "max_model_len": 128},
            "data": {
                "train": {"path": str(tiny_setup.train_path)},
                "eval": {"path": str(tiny_setup.eval_path), "limit": 16},
            },
            "sampling": {"n": 4, "temperature": 1.0, "top_p": 1.0, "max_tokens": 24},
            "sync": {"interval": interval},
            "train": {"steps": steps, "batch_prompts": batch_prompts, "micro_batch_pairs": 8, "seed": 1},
            "optim": {"lr": 3e-4, "adam_eps": 1e-8, "grad_clip": 1.0},
            "dpo": {"beta": 0.1},
            "eval": {"samples_per_prompt": 2},
        }
        for section, value in overrides.items():
            spec[section] = {**spec.get(section, {}), **value} if isinstance(value, dict) else value
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    return _write
