"""Read a dataset (a local JSONL / JSON / Parquet file, or a Hugging Face Hub dataset), turn its rows into
problems (semirl/data/sources.py), drop duplicates and anything also in the evaluation sets, and write the
JSONL a run spec's `data.train` / `data.eval` reads (`id`, `problem`, `answer`, `source` per row)."""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from semirl.core.files import atomic_writer
from semirl.data.sources import SOURCES, Dropped, PreparedRow

HUB_PREFIX = "hub:"
DATA_SUFFIXES = (".jsonl", ".json", ".parquet")


class Summary(BaseModel):
    source: str
    read: int = 0
    written: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)
    out: str


def normalized(problem: str) -> str:
    """The problem text compared for duplicates and contamination: NFKC, case and whitespace folded."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", problem)).strip().lower()


def read_rows(location: str, split: str = "train") -> Iterator[dict[str, Any]]:
    """Rows of a local file or directory, or of `hub:<owner>/<dataset>` (its `split` files, downloaded with
    huggingface_hub; a gated dataset needs HF_TOKEN)."""
    if location.startswith(HUB_PREFIX):
        yield from _hub_rows(location[len(HUB_PREFIX):], split)
        return
    path = Path(location)
    files = sorted(p for p in path.rglob("*") if p.suffix in DATA_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{location}: no {', '.join(DATA_SUFFIXES)} files")
    for file in files:
        yield from _file_rows(file)


def _hub_rows(repo_id: str, split: str) -> Iterator[dict[str, Any]]:
    from huggingface_hub import snapshot_download

    local = Path(snapshot_download(repo_id, repo_type="dataset",
                                   allow_patterns=[f"*{split}*{suffix}" for suffix in DATA_SUFFIXES]))
    files = sorted(p for p in local.rglob("*") if p.suffix in DATA_SUFFIXES and split in p.name)
    if not files:
        raise ValueError(f"{HUB_PREFIX}{repo_id}: no files of split {split!r}")
    for file in files:
        yield from _file_rows(file)


def _file_rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as parquet

        for batch in parquet.ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    elif path.suffix == ".json":
        data = json.loads(path.read_text())
        rows = data if isinstance(data, list) else data.get("data", data.get("rows", []))
        yield from (row for row in rows if isinstance(row, dict))
    else:
        with path.open() as handle:
            for line_no, line in enumerate(handle, start=1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError(f"{path}:{line_no}: a row must be a JSON object")
                    yield row


def excluded_problems(paths: list[Path]) -> set[str]:
    """Normalized problems of the evaluation sets a training set must not contain (any supported format)."""
    found: set[str] = set()
    for path in paths:
        for row in read_rows(str(path)):
            text = row.get("problem") or row.get("question")
            if isinstance(text, str):
                found.add(normalized(text))
    return found


def prepare(source: str, location: str, out: Path, *, split: str = "train", exclude: list[Path] | None = None,
            limit: int | None = None) -> Summary:
    """Write `out` atomically from `location`'s rows; what was read, written and dropped (by reason)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; one of {', '.join(SOURCES)}")
    convert = SOURCES[source]
    banned = excluded_problems(exclude or [])
    seen: set[str] = set()
    dropped: Counter[str] = Counter()
    kept: list[PreparedRow] = []
    read = 0
    for index, row in enumerate(read_rows(location, split)):
        read += 1
        try:
            prepared = convert(row, index)
        except Dropped as why:
            dropped[str(why)] += 1
            continue
        key = normalized(prepared.problem)
        if key in banned:
            dropped["in an evaluation set"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            kept.append(prepared)
            if limit and len(kept) >= limit:
                break
    if not kept:
        raise ValueError(f"{location}: no usable {source} rows (dropped: {dict(dropped)})")
    _write_atomically(out, kept)
    return Summary(source=source, read=read, written=len(kept), dropped=dict(dropped), out=str(out))


def _write_atomically(out: Path, rows: list[PreparedRow]) -> None:
    with atomic_writer(out) as handle:
        for row in rows:
            handle.write(row.model_dump_json() + "\n")
