"""Generate the Python stubs for `proto/semirl/v1/*.proto` into `services/semirl/proto/`.

protoc names modules after the proto path (`semirl.v1.types_pb2`); the stubs live in the package
`semirl.proto`, so their cross-imports are rewritten. `python -m semirl.protogen --check` exits 1 when
the committed stubs differ from what the protos generate.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
STUB_DIR = Path(__file__).resolve().parent / "proto"
_IMPORT = re.compile(r"^from semirl\.v1 import (\w+_pb2)", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    """Run protoc over every proto file and write import-fixed stubs into out_dir."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(PROTO_ROOT.glob("semirl/v1/*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(p.relative_to(PROTO_ROOT)) for p in protos],
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed")
        written = []
        out_dir.mkdir(parents=True, exist_ok=True)
        for src in sorted((Path(tmp) / "semirl" / "v1").iterdir()):
            text = _IMPORT.sub(r"from semirl.proto import \1", src.read_text())
            dst = out_dir / src.name
            dst.write_text(text)
            written.append(dst)
    return written


def stale_files() -> list[str]:
    """Names of stubs that differ from a fresh generation (empty when up to date)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p.read_text() for p in generate(Path(tmp))}
    committed = {p.name: p.read_text() for p in STUB_DIR.glob("*_pb2*.py*")}
    names = set(fresh) | set(committed)
    return sorted(n for n in names if fresh.get(n) != committed.get(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs are stale")
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        if stale:
            print("stale generated stubs (run `make proto`):", ", ".join(stale))
            sys.exit(1)
        print("stubs up to date")
        return
    for path in generate(STUB_DIR):
        print("wrote", path.relative_to(REPO_ROOT))


if __name__ == "__main__":
    main()
