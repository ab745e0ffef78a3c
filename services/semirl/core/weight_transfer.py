"""In-memory weight transfer, the part both ends share: the bucket plan, packing, the transfer group, a digest.

docs/architecture.md, weight transfer. The trainer gathers its parameters a bucket at a time (bounded memory on
every rank at 8B), packs each bucket into one flat byte tensor in the policy dtype and broadcasts it to the
generators of the sync's plan; a generator unpacks each bucket into views and hands them to vLLM's
`load_weights`. The bucket plan (names, dtypes, shapes, offsets) travels in the ReceiveWeights RPC, the bytes in
the collective: gloo over TCP on CPU, NCCL on CUDA, behind one `TransferGroup`. Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

DEFAULT_BUCKET_BYTES = 256 << 20   # 64 buckets for Llama-3.1-8B in bf16; the bound on each rank's extra memory
ALIGN = 16                          # byte alignment of each tensor in a bucket (any dtype's element size divides it)


@dataclass(frozen=True)
class ParamSpec:
    name: str
    dtype: str          # torch dtype name without "torch.", e.g. "bfloat16"
    shape: tuple[int, ...]
    offset: int = 0     # byte offset in its bucket

    @property
    def torch_dtype(self) -> torch.dtype:
        dtype = getattr(torch, self.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"{self.name}: unknown dtype {self.dtype!r}")
        return dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.torch_dtype).element_size()


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _aligned(size: int) -> int:
    return (size + ALIGN - 1) // ALIGN * ALIGN


def plan_buckets(params: Iterable[tuple[str, tuple[int, ...], torch.dtype]],
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> list[list[ParamSpec]]:
    """Group parameters, in order, into buckets of at most `bucket_bytes` (a larger tensor gets a bucket alone),
    each tensor at an aligned offset."""
    if bucket_bytes <= 0:
        raise ValueError("bucket_bytes must be positive")
    buckets: list[list[ParamSpec]] = []
    current: list[ParamSpec] = []
    used = 0
    for name, shape, dtype in params:
        spec = ParamSpec(name, dtype_name(dtype), tuple(int(d) for d in shape))
        size = _aligned(spec.nbytes)
        if current and used + size > bucket_bytes:
            buckets.append(current)
            current, used = [], 0
        current.append(ParamSpec(spec.name, spec.dtype, spec.shape, used))
        used += size
    if current:
        buckets.append(current)
    return buckets


def bucket_bytes_of(bucket: list[ParamSpec]) -> int:
    last = bucket[-1]
    return _aligned(last.offset + last.nbytes) if bucket else 0


def pack(bucket: list[ParamSpec], tensors: dict[str, torch.Tensor], device: torch.device | str = "cpu"
         ) -> torch.Tensor:
    """One flat uint8 tensor holding the bucket's tensors (cast to each spec's dtype) at their offsets."""
    flat = torch.empty(bucket_bytes_of(bucket), dtype=torch.uint8, device=device)
    for spec in bucket:
        tensor = tensors[spec.name]
        if tuple(tensor.shape) != spec.shape:
            raise ValueError(f"{spec.name}: shape {tuple(tensor.shape)} is not the planned {spec.shape}")
        view = flat[spec.offset:spec.offset + spec.nbytes].view(spec.torch_dtype).view(spec.shape)
        view.copy_(tensor.detach())
    return flat


def unpack(bucket: list[ParamSpec], flat: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, view) of each tensor in a received bucket; the views share `flat`'s memory."""
    if flat.dtype != torch.uint8 or flat.numel() != bucket_bytes_of(bucket):
        raise ValueError(f"bucket of {flat.numel()} bytes, planned {bucket_bytes_of(bucket)}")
    for spec in bucket:
        yield spec.name, flat[spec.offset:spec.offset + spec.nbytes].view(spec.torch_dtype).view(spec.shape)


def params_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 over (name, dtype, shape, bytes) in name order: equal digests mean bitwise-equal parameters."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named, key=lambda item: item[0]):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{dtype_name(data.dtype)}|{tuple(data.shape)}\0".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


class TransferError(RuntimeError):
    """A transfer group that did not form (a peer never came) or a broadcast that failed."""


class PendingBroadcast:
    """A broadcast in flight; it holds its tensor until it is done."""

    def __init__(self, work: Any, tensor: torch.Tensor, timeout: timedelta) -> None:  # noqa: ANN401
        self.work = work
        self.tensor = tensor
        self.timeout = timeout

    def wait(self) -> torch.Tensor:
        try:
            self.work.wait(self.timeout)
        except Exception as err:  # noqa: BLE001
            raise TransferError(f"broadcast failed: {err}") from None
        return self.tensor


class TransferGroup:
    """A process group of the trainer (rank 0) and a sync's generators, of its own (never the default group: the
    trainer's DeepSpeed ranks use that one). Rank 0 hosts the rendezvous store on `port`; `name` keys the attempt
    so that a retry never meets a stale peer. Gloo over TCP for CPU tensors, NCCL for CUDA ones."""

    def __init__(self, *, host: str, port: int, rank: int, world_size: int, name: str, timeout_s: float,
                 device: torch.device | str = "cpu") -> None:
        import torch.distributed as dist

        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.timeout = timedelta(seconds=timeout_s)
        self.store: Any = None
        self.group: Any = None
        try:
            self.store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=self.timeout,
                                       wait_for_workers=False, use_libuv=True)
            prefixed = dist.PrefixStore(f"semirl/{name}", self.store)
            if self.device.type == "cuda":
                options = dist.ProcessGroupNCCL.Options()
                options._timeout = self.timeout
                self.group = dist.ProcessGroupNCCL(prefixed, rank, world_size, options)
            else:
                self.group = dist.ProcessGroupGloo(prefixed, rank, world_size, self.timeout)
        except Exception as err:  # noqa: BLE001
            # Free the store (rank 0: its listening socket) now: the original exception's frames would keep it,
            # and the port, alive for the retry that follows.
            prefixed = None
            self.close()
            raise TransferError(f"transfer group {name} not formed: {err}") from None

    def broadcast(self, tensor: torch.Tensor) -> None:
        """Broadcast `tensor` from rank 0 in place; raises on a peer that died or missed the deadline."""
        self.start_broadcast(tensor).wait()

    def start_broadcast(self, tensor: torch.Tensor) -> PendingBroadcast:
        """Start broadcasting `tensor` (the group's own threads move it); `wait()` on the result before reading a
        received tensor or reusing a sent one. One in flight while the next bucket is packed or the last one
        loaded: both ends overlap the wire with their own work."""
        import torch.distributed as dist

        options = dist.BroadcastOptions()
        options.rootRank = 0
        options.rootTensor = 0
        try:
            return PendingBroadcast(self.group.broadcast([tensor], options), tensor, self.timeout)
        except Exception as err:  # noqa: BLE001
            raise TransferError(f"broadcast failed: {err}") from None

    def close(self) -> None:
        group, self.group = self.group, None
        if group is not None and hasattr(group, "abort"):
            with contextlib.suppress(RuntimeError):
                group.abort()
        self.store = None
