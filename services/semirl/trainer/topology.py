"""Where this trainer process sits in a DeepSpeed job, from its pod's identity.

The chart runs the trainer as a StatefulSet behind a headless Service, so pod `<sts>-<i>` is node `i`, and
node 0 is reachable at a stable DNS name (MASTER_ADDR). The chart sets:
SEMIRL_TRAINER_REPLICAS (nodes), SEMIRL_GPUS_PER_POD (ranks per node), MASTER_ADDR, MASTER_PORT and NODE_RANK
(from the `apps.kubernetes.io/pod-index` label); without NODE_RANK the ordinal is read off the host name.
Without GPUs, SEMIRL_TRAINER_LOCAL_RANKS sets the ranks per node (`semirl up --trainer-ranks N`: gloo on CPU).
World size = nodes × ranks per node; `trainer/launcher.py` starts a node's ranks.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping

from pydantic import BaseModel, Field


class TopologyError(ValueError):
    pass


class TrainerTopology(BaseModel):
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    cpu_ranks_per_node: int = Field(1, ge=1, description="ranks per node when the pod has no GPU")
    node_rank: int = Field(0, ge=0)
    master_addr: str = "127.0.0.1"
    master_port: int = Field(29500, gt=0, lt=65536)

    @property
    def ranks_per_node(self) -> int:
        return self.gpus_per_node or self.cpu_ranks_per_node

    @property
    def world_size(self) -> int:
        return self.nodes * self.ranks_per_node

    def check_supported(self) -> None:
        if self.node_rank >= self.nodes:
            raise TopologyError(f"node rank {self.node_rank} is outside a job of {self.nodes} node(s)")


def check_devices(topology: TrainerTopology, cuda_devices: int) -> None:
    """A pod given GPUs must see them: otherwise DeepSpeed would quietly train on the CPU while holding them."""
    if topology.gpus_per_node > cuda_devices:
        raise TopologyError(
            f"the pod asks for {topology.gpus_per_node} GPU(s) (SEMIRL_GPUS_PER_POD) but CUDA sees {cuda_devices}: "
            "the node's driver may be older than the image's CUDA, or the device plugin / runtime class "
            "(trainer.runtimeClassName) did not expose them")


def ordinal_from_hostname(hostname: str) -> int | None:
    """`rl-semirl-trainer-3` -> 3 (a StatefulSet pod's name ends in its ordinal)."""
    found = re.search(r"-(\d+)$", hostname)
    return int(found[1]) if found else None


def topology_from_env(environ: Mapping[str, str] | None = None, hostname: str | None = None) -> TrainerTopology:
    env = os.environ if environ is None else environ
    try:
        rank_text = env.get("NODE_RANK")
        node_rank = int(rank_text) if rank_text else ordinal_from_hostname(hostname or socket.gethostname()) or 0
        return TrainerTopology(
            nodes=int(env.get("SEMIRL_TRAINER_REPLICAS", "1")),
            gpus_per_node=int(env.get("SEMIRL_GPUS_PER_POD", "0")),
            cpu_ranks_per_node=int(env.get("SEMIRL_TRAINER_LOCAL_RANKS", "1")),
            node_rank=node_rank,
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", "29500")),
        )
    except ValueError as err:
        raise TopologyError(f"bad trainer topology in the environment: {err}") from err
