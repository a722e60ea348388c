"""The package's import graph: no cycle anywhere, and the web layer below the service.

Imports are read from the source with ``ast``, all of them: top-level, inside functions and
under ``if TYPE_CHECKING`` (a cycle only type checkers follow still ties the modules
together for a reader).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import llamaswap

PACKAGE = Path(llamaswap.__file__).parent


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported(module: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The package's modules that ``module`` imports, wherever the import statement is."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    yield f"{base}.{alias.name}"  # from llamaswap.web import auth
                elif base in known:
                    yield base


def import_graph() -> dict[str, set[str]]:
    known = module_names()
    return {name: set(imported(name, path, known)) - {name} for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (depth-first search)."""
    finished: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if target in path:
                return path[path.index(target):] + [target]
            if target not in finished:
                cycle = visit(target)
                if cycle is not None:
                    return cycle
        finished.add(path.pop())
        return None

    for start in sorted(graph):
        if start not in finished:
            cycle = visit(start)
            if cycle is not None:
                return cycle
    return None


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "import llamaswap.config\n"
        "from llamaswap.web import auth\n"  # a module from its package
        "from llamaswap.logs import get_logger\n"  # a name from a module
        "if TYPE_CHECKING:\n"
        "    from llamaswap.service import LlamaSwapService\n"
        "def f() -> None:\n"
        "    from llamaswap.web.root import build_root\n")
    assert set(imported("llamaswap.probe", probe, module_names())) == {
        "llamaswap.config", "llamaswap.web.auth", "llamaswap.logs", "llamaswap.service",
        "llamaswap.web.root"}


def test_find_cycle_finds_one_and_only_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_llamaswap() -> None:
    assert find_cycle(import_graph()) is None


def test_the_web_layer_never_imports_the_service_or_the_entry_points() -> None:
    graph = import_graph()
    above = {"llamaswap.service", "llamaswap.tap", "llamaswap.cli"}
    for module, targets in graph.items():
        if module.startswith("llamaswap.web."):
            assert not targets & above, module
