"""`python -m semirl.data --source numinamath --input hub:AI-MO/NuminaMath-CoT --out data/numinamath.jsonl
--exclude data/math500.jsonl --exclude data/amc23.jsonl`: one dataset into the run spec's problem JSONL."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from semirl.data.prepare import prepare
from semirl.data.sources import SOURCES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m semirl.data", description=__doc__)
    parser.add_argument("--source", required=True, choices=sorted(SOURCES), help="what the rows look like")
    parser.add_argument("--input", required=True,
                        help="a .jsonl/.json/.parquet file or folder, or hub:<owner>/<dataset> (HF_TOKEN if gated)")
    parser.add_argument("--split", default="train", help="the Hub split to read (default: train)")
    parser.add_argument("--out", required=True, type=Path, help="the JSONL to write (replaced atomically)")
    parser.add_argument("--exclude", action="append", type=Path, default=[],
                        help="an evaluation set whose problems must not be trained on (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="keep at most this many problems")
    args = parser.parse_args(argv)
    try:
        summary = prepare(args.source, args.input, args.out, split=args.split, exclude=args.exclude,
                          limit=args.limit)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary.model_dump_json(indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
