"""Files written whole or not at all: a reader (or a process restarted mid-write) never sees half a file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

_DEFAULT_UMASK = 0o022


def process_umask() -> int:
    """This process's umask, read without changing it (os.umask can only be read by setting it, which races with
    other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return _DEFAULT_UMASK


def file_mode() -> int:
    """The mode `open(path, "w")` would give a new file: mkstemp's 0600 would make every file written atomically
    unreadable to any other user (the images' baked demo, read by the runtime uid, was)."""
    return 0o666 & ~process_umask()


def share_readable(directory: Path) -> None:
    """Give every file under `directory` the mode a plain `open` would: safetensors' writer leaves 0600, so a model
    written by one user (an image's build, as root) could not be read by another (the runtime uid 10001)."""
    mode = file_mode()
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[TextIO]:
    """Write to a temporary file beside `path`, fsync it, then rename it over `path`; on any error the temporary
    file goes and `path` is as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(descriptor, file_mode())
        with os.fdopen(descriptor, "w") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_writer(path) as handle:
        handle.write(text)
