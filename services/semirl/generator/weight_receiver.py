"""The generator's end of an in-memory weight sync: what the generator process calls, and the registration of
vLLM weight-transfer backend "semirl" (generator/vllm_backend.py, which the worker imports).

docs/architecture.md, weight transfer. `receive` drives the four phases of vLLM's weight-transfer API through
`collective_rpc` on every worker of the engine; the dataclasses are the backend's init and update infos.

Registration: `register()` in the generator process; the `vllm.general_plugins` entry point (pyproject.toml)
registers it in the engine-core and worker processes vLLM spawns on GPUs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from semirl.core.weight_transfer import ParamSpec

log = logging.getLogger(__name__)

BACKEND = "semirl"


@dataclass
class SemirlInitInfo:
    host: str
    port: int
    rank: int
    world_size: int
    name: str
    timeout_s: float = 120.0


@dataclass
class SemirlUpdateInfo:
    # [[name, dtype, shape, offset], ...] per bucket: plain lists, as vLLM's RPC passes them
    buckets: list[list[list[Any]]] = field(default_factory=list)


def bucket_specs(bucket: list[list[Any]]) -> list[ParamSpec]:
    return [ParamSpec(str(name), str(dtype), tuple(int(d) for d in shape), int(offset))
            for name, dtype, shape, offset in bucket]


def register() -> None:
    """Add the backend to vLLM's registry (idempotent); the `vllm.general_plugins` entry point."""
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    if BACKEND not in WeightTransferEngineFactory._registry:  # lazily: the backend module imports vLLM
        WeightTransferEngineFactory.register_engine(BACKEND, "semirl.generator.vllm_backend",
                                                    "SemirlWeightTransferEngine")


def receive(llm: Any, init: SemirlInitInfo, update: SemirlUpdateInfo) -> None:
    """Run the four phases on every worker of `llm`; the group is torn down whatever happens."""
    llm.collective_rpc("init_weight_transfer_engine", args=(vars(init),))
    try:
        llm.collective_rpc("start_weight_update")
        llm.collective_rpc("update_weights", args=(vars(update),))  # a failure here ends the update session
        llm.collective_rpc("finish_weight_update")
    finally:
        llm.collective_rpc("shutdown_weight_transfer_engine")


def _model_digest(worker: Any) -> str:
    from semirl.core.weight_transfer import params_digest

    return params_digest(worker.model_runner.get_model().named_parameters())


def weights_digest(llm: Any) -> str:
    """sha256 of the engine's parameters (vLLM's own layout: fused qkv, gate_up), through collective_rpc."""
    return str(llm.collective_rpc(_model_digest)[0])
