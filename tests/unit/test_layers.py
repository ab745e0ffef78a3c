"""The layering of services/semirl, read from the code's own imports with `ast` (docs/architecture.md, workers).

- A service package (controller, generator, verifier, reward, trainer) imports no other service: what they share
  lives in core/ (rewards, wire, chat, ownership, the checkpoint store, the worker kit), data/ (datasets) or spec.py.
- core/, data/ and spec.py import no service.
- No two files of one service import each other in a cycle (at module level or inside a function).
- Every worker package has the same five files: engine, loop, servicer, metrics and entry point.
Composition (cli.py, local/, sweep/, tinymodel/, bench/) may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import semirl

PACKAGE = Path(semirl.__file__).parent
SERVICES = ("controller", "generator", "verifier", "reward", "trainer")
WORKERS = ("generator", "verifier", "reward", "trainer")
WORKER_FILES = {"engine.py", "loop.py", "grpc_api.py", "metrics.py", "__main__.py"}
NEUTRAL = ("core", "data", "spec")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every semirl module `path` imports, anywhere in the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from semirl.core import keys`
    return {name for name in found if name == "semirl" or name.startswith("semirl.")}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _sources() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if "proto" not in path.relative_to(PACKAGE).parts)


def _violations(owner_layers: tuple[str, ...], forbidden: tuple[str, ...], *, same_ok: bool) -> list[str]:
    problems = []
    for path in _sources():
        layer = _layer(_module_name(path))
        if layer not in owner_layers:
            continue
        for imported in sorted(_imports(path)):
            target = _layer(imported)
            if target in forbidden and not (same_ok and target == layer):
                problems.append(f"{path.relative_to(PACKAGE)} imports {imported}")
    return problems


def test_no_service_imports_another() -> None:
    assert _violations(SERVICES, SERVICES, same_ok=True) == []


def test_core_data_and_the_spec_import_no_service() -> None:
    assert _violations(NEUTRAL, SERVICES, same_ok=False) == []


def test_the_check_sees_a_crossing_import(tmp_path: Path) -> None:
    """The reader resolves absolute, relative and `from package import module` forms (a check that cannot fail
    would prove nothing)."""
    path = PACKAGE / "trainer" / "_probe_for_test_layers.py"
    path.write_text("from semirl.controller import windows\nfrom ..verifier.engine import Scorer\n"
                    "def late():\n    import semirl.reward.loop\n")
    try:
        assert {_layer(name) for name in _imports(path)} >= {"controller", "verifier", "reward"}
        found = _violations(SERVICES, SERVICES, same_ok=True)
        assert any("_probe_for_test_layers.py imports semirl.controller.windows" in p for p in found)
        assert any("imports semirl.verifier.engine" in p for p in found)
        assert any("imports semirl.reward.loop" in p for p in found)
    finally:
        path.unlink()


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node):], node]
        if node in done:
            return None
        visiting.append(node)
        for nxt in sorted(graph.get(node, ())):
            if (found := visit(nxt)) is not None:
                return found
        visiting.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if (found := visit(start)) is not None:
            return found
    return None


@pytest.mark.parametrize("service", SERVICES)
def test_no_import_cycle_within_a_service(service: str) -> None:
    modules = {_module_name(path): path for path in (PACKAGE / service).rglob("*.py")}
    graph = {name: {imported for imported in _imports(path) if imported in modules and imported != name}
             for name, path in modules.items()}
    assert _cycle(graph) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("worker", WORKERS)
def test_every_worker_has_the_same_five_files(worker: str) -> None:
    files = {path.name for path in (PACKAGE / worker).glob("*.py")}
    assert files >= WORKER_FILES, f"{worker}/ lacks {sorted(WORKER_FILES - files)}"


@pytest.mark.parametrize("worker", WORKERS)
def test_a_workers_loop_is_a_worker_and_its_servicer_does_not_import_it(worker: str) -> None:
    loop = (PACKAGE / worker / "loop.py").read_text()
    assert "Worker" in loop and ("core.worker import" in loop or "core.group_scoring import" in loop)
    assert f"semirl.{worker}.loop" not in _imports(PACKAGE / worker / "grpc_api.py")
