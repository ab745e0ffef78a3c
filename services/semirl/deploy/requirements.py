"""The pip requirements of one or more of the project's extras, read from pyproject.toml: the images' one list.

Every image installs what `pyproject.toml` lists for its components (docker/README.md), never a list of its own, so
the images and the local `make setup` cannot drift apart. The heavy packages go in before the project's sources are
copied (a change to the code then rebuilds only the last layer), hence this script reads the file instead of letting
`pip install .[extra]` resolve it. Standard library only: it runs in a bare build stage, by path:

    python requirements.py pyproject.toml trainer                 # the base dependencies and the `trainer` extra
    python requirements.py pyproject.toml trainer --only torch    # just torch's line (installed first)
    python requirements.py pyproject.toml trainer --extras-only   # without the base dependencies
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path, extras: list[str], *, base: bool = True) -> list[str]:
    """The requirement lines of `extras` (self-references such as `semirl[trainer]` expanded), base dependencies
    first when `base`; each package once, in the order first met."""
    project = tomllib.loads(pyproject.read_text())["project"]
    own = canonical(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    lines: list[str] = list(project.get("dependencies", [])) if base else []
    seen_extras: set[str] = set()

    def expand(extra: str) -> None:
        if extra in seen_extras:
            return
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r} (it has: {', '.join(sorted(optional))})")
        seen_extras.add(extra)
        for line in optional[extra]:
            match = _NAME.match(line)
            if match and canonical(match.group(1)) == own:
                for inner in (match.group(2) or "").split(","):
                    if inner.strip():
                        expand(inner.strip())
            else:
                lines.append(line)

    for extra in extras:
        expand(extra)
    unique: dict[str, str] = {}
    for line in lines:
        match = _NAME.match(line)
        unique.setdefault(canonical(match.group(1)) if match else line, line)
    return list(unique.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("extras", nargs="+")
    parser.add_argument("--only", default="", help="comma-separated package names to keep")
    parser.add_argument("--extras-only", action="store_true", help="leave out the base dependencies")
    args = parser.parse_args(argv)
    lines = requirements(args.pyproject, args.extras, base=not args.extras_only)
    if args.only:
        wanted = {canonical(name) for name in args.only.split(",")}
        lines = [line for line in lines if (m := _NAME.match(line)) and canonical(m.group(1)) in wanted]
        missing = wanted - {canonical(_NAME.match(line).group(1)) for line in lines}  # type: ignore[union-attr]
        if missing:
            raise SystemExit(f"the extras {args.extras} list no {', '.join(sorted(missing))}")
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
