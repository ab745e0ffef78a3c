"""The trainer's process group: DeepSpeed's distributed init, and a gloo control channel between the ranks.

Ranks come from the launcher's environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT — torchrun's
names, which `python -m semirl.trainer` sets when it starts several local ranks). Without them the process is a
world of one. Collectives of the training step run on DeepSpeed's backend (NCCL on GPUs, gloo on CPU); rank 0's
commands to the other ranks travel as serialized protobuf over a separate gloo group, so they need no GPU
memory and never interleave with the step's collectives (docs/architecture.md, "multi-rank trainer").
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch

from semirl.core.redis_server import free_port

# How long a rank waits in one collective. On the control group rank 0 sends a heartbeat every few seconds while
# it waits for groups, so only model loading and checkpoint writes come near this. The training collectives
# (DeepSpeed's group: NCCL on GPUs) get a shorter limit: a rank that died mid-step then stops the others within
# minutes instead of an hour, and the job restarts.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("SEMIRL_COLLECTIVE_TIMEOUT_MIN", "60")))
STEP_COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("SEMIRL_STEP_TIMEOUT_MIN", "15")))


def import_deepspeed() -> Any:
    """Import deepspeed with the CPU accelerator selected when there is no CUDA device."""
    if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed

    return deepspeed


def ensure_distributed() -> None:
    """Initialize torch.distributed once; a world of one (gloo on CPU) when no launcher set WORLD_SIZE."""
    deepspeed = import_deepspeed()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(
            RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())
        )
        # A world of one needs no rendezvous: an in-memory store binds no port, so none can clash with the
        # service's own (a port found free here may be the one the caller chose for gRPC but not bound yet).
        torch.distributed.init_process_group(backend, store=torch.distributed.HashStore(), rank=0, world_size=1,
                                             timeout=STEP_COLLECTIVE_TIMEOUT)
    deepspeed.init_distributed(dist_backend=backend, verbose=False, timeout=STEP_COLLECTIVE_TIMEOUT)


@dataclass
class RankGroup:
    """This process's place in the trainer job and the control channel rank 0 drives the others with."""

    rank: int
    world_size: int
    control: Any  # a gloo ProcessGroup over all ranks (None in a world of one)

    @property
    def is_driver(self) -> bool:
        return self.rank == 0

    def broadcast_bytes(self, payload: bytes | None) -> bytes:
        """Rank 0's `payload` on every rank (two gloo broadcasts: the length, then the bytes)."""
        if self.world_size == 1:
            assert payload is not None
            return payload
        dist = torch.distributed
        size = torch.tensor([len(payload) if self.is_driver and payload is not None else 0], dtype=torch.long)
        dist.broadcast(size, src=0, group=self.control)
        if self.is_driver:
            assert payload is not None
            empty = torch.empty(0, dtype=torch.uint8)
            buffer = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload else empty
        else:
            buffer = torch.empty(int(size.item()), dtype=torch.uint8)
        if buffer.numel():
            dist.broadcast(buffer, src=0, group=self.control)
        return bytes(buffer.numpy().tobytes())

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier(group=self.control)


def join_trainer_group() -> RankGroup:
    """Initialize the process group (DeepSpeed's backend) and the gloo control group over all ranks."""
    ensure_distributed()
    dist = torch.distributed
    world = dist.get_world_size()
    control = dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT) if world > 1 else None
    return RankGroup(rank=dist.get_rank(), world_size=world, control=control)
