"""`core/files.py`: a file is replaced whole or left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from semirl.core.files import atomic_writer, write_text_atomically


def test_a_file_is_written_whole_in_a_directory_made_for_it(tmp_path: Path) -> None:
    path = tmp_path / "new" / "rows.jsonl"
    write_text_atomically(path, "one\n")
    assert path.read_text() == "one\n"
    assert [p.name for p in path.parent.iterdir()] == ["rows.jsonl"]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_writer(path) as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]
