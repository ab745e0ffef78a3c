"""The shared half of in-memory weight transfer: bucket plans, packing, the digest, and a real two-process gloo
transfer group (its deadline when a peer never comes)."""

from __future__ import annotations

import multiprocessing
import socket
import time

import pytest
import torch

from semirl.core.weight_transfer import (
    ParamSpec,
    TransferError,
    TransferGroup,
    bucket_bytes_of,
    pack,
    params_digest,
    plan_buckets,
    unpack,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_buckets_are_bounded_ordered_and_aligned() -> None:
    params = [("a", (10, 10), torch.bfloat16), ("b", (3,), torch.float32), ("c", (1000,), torch.float32),
              ("d", (7,), torch.bfloat16)]
    buckets = plan_buckets(params, bucket_bytes=512)
    assert [[p.name for p in b] for b in buckets] == [["a", "b"], ["c"], ["d"]]  # c (4000 B) alone, over the bound
    assert all(p.offset % 16 == 0 for b in buckets for p in b)
    assert buckets[0][1].offset == 208  # a: 200 bytes, aligned up to 208
    assert all(bucket_bytes_of(b) <= 512 for b in buckets if len(b) > 1)
    with pytest.raises(ValueError):
        plan_buckets(params, bucket_bytes=0)


def test_pack_and_unpack_round_trip_bitwise_in_the_planned_dtype() -> None:
    tensors = {"w": torch.randn(4, 5), "b": torch.randn(5).bfloat16(), "n": torch.arange(6).view(2, 3)}
    bucket = plan_buckets([(k, tuple(v.shape), v.dtype) for k, v in tensors.items()], 1 << 20)[0]
    flat = pack(bucket, tensors)
    assert flat.dtype == torch.uint8 and flat.numel() == bucket_bytes_of(bucket)
    out = dict(unpack(bucket, flat))
    assert all(torch.equal(out[k], v) and out[k].dtype == v.dtype for k, v in tensors.items())
    with pytest.raises(ValueError, match="shape"):
        pack(bucket, {**tensors, "w": torch.randn(5, 4)})
    with pytest.raises(ValueError, match="bytes"):
        list(unpack(bucket, flat[:-16]))
    with pytest.raises(ValueError, match="dtype"):
        ParamSpec("x", "pickle", (1,)).torch_dtype  # noqa: B018


def test_digest_sees_one_changed_value_and_ignores_order() -> None:
    named = [("a", torch.zeros(3)), ("b", torch.ones(2, 2))]
    assert params_digest(named) == params_digest(list(reversed(named)))
    changed = [("a", torch.tensor([0.0, 0.0, 1e-7])), named[1]]
    assert params_digest(changed) != params_digest(named)
    assert params_digest([("a", torch.zeros(3, dtype=torch.bfloat16))]) != params_digest(named[:1])


def _receive(port: int, name: str, results: multiprocessing.Queue) -> None:
    group = TransferGroup(host="127.0.0.1", port=port, rank=1, world_size=2, name=name, timeout_s=30)
    tensor = torch.zeros(1 << 16, dtype=torch.uint8)
    group.broadcast(tensor)
    results.put(int(tensor.sum()))
    group.close()


def test_a_gloo_group_between_two_processes_and_a_second_attempt_on_the_same_port() -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    port = free_port()
    for attempt in range(2):  # a retry reuses the port under a new name
        peer = context.Process(target=_receive, args=(port, f"try{attempt}", results))
        peer.start()
        group = TransferGroup(host="127.0.0.1", port=port, rank=0, world_size=2, name=f"try{attempt}", timeout_s=30)
        group.broadcast(torch.full((1 << 16,), attempt + 1, dtype=torch.uint8))
        assert results.get(timeout=30) == (attempt + 1) << 16
        group.close()
        peer.join(30)
        assert peer.exitcode == 0


def test_a_peer_that_never_joins_fails_the_group_at_its_deadline_and_frees_the_port() -> None:
    """The retry after a dropped member listens on the same port at once (the failed group's store is gone)."""
    port = free_port()
    started = time.monotonic()
    with pytest.raises(TransferError, match="not formed"):
        TransferGroup(host="127.0.0.1", port=port, rank=0, world_size=2, name="alone", timeout_s=2)
    assert time.monotonic() - started < 20
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    peer = context.Process(target=_receive, args=(port, "retry", results))
    peer.start()
    group = TransferGroup(host="127.0.0.1", port=port, rank=0, world_size=2, name="retry", timeout_s=30)
    group.broadcast(torch.ones(1 << 16, dtype=torch.uint8))
    assert results.get(timeout=30) == 1 << 16
    group.close()
    peer.join(30)
