"""Read a W&B offline run's transaction log (run-<id>.wandb) in the tests: a LevelDB-style log (a 7-byte
':W&B' header, then 32 KiB blocks of records with a crc32/length/type header, chunked FULL or FIRST/MIDDLE/LAST)
of `wandb_internal_pb2.Record` messages. wandb 0.31's Python package no longer ships a reader (its core is Go)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    found: list[Any] = []
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < HEADER:  # the block's tail is padding
            position += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + HEADER])
        if length == 0 and kind == 0:
            position += left_in_block
            continue
        chunk = data[position + HEADER:position + HEADER + length]
        position += HEADER + length
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        else:
            pending += chunk
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        found.append(record)
        pending = b""
    return found


def history(path: Path) -> list[dict[str, str]]:
    """Every logged row: key -> JSON text of the value."""
    return [{item.key or "/".join(item.nested_key): item.value_json for item in r.history.item}
            for r in records(path) if r.WhichOneof("record_type") == "history"]


def of_kind(path: Path, kind: str) -> list[Any]:
    return [getattr(r, kind) for r in records(path) if r.WhichOneof("record_type") == kind]
