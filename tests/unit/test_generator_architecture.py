"""What decides between an in-place weight reload and a rebuild of the vLLM engine."""

from __future__ import annotations

import json
from pathlib import Path

from semirl.generator.engine import architecture


def _model_dir(root: Path, name: str, template: str, hidden: int = 64) -> Path:
    path = root / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": hidden}))
    (path / "tokenizer.json").write_text('{"model": "same"}')
    (path / "chat_template.jinja").write_text(template)
    return path


def test_a_different_chat_template_or_shape_is_not_reloaded_in_place(tmp_path: Path) -> None:
    base = _model_dir(tmp_path, "a", "{{ messages[0]['content'] }}")
    same = _model_dir(tmp_path, "b", "{{ messages[0]['content'] }}")
    other_template = _model_dir(tmp_path, "c", "<s>{{ messages[0]['content'] }}")
    other_shape = _model_dir(tmp_path, "d", "{{ messages[0]['content'] }}", hidden=128)
    assert architecture(base) == architecture(same)  # a new checkpoint of the same model: reload in place
    assert architecture(base) != architecture(other_template)  # the engine's tokenizer would be stale
    assert architecture(base) != architecture(other_shape)
