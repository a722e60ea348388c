"""The package's import graph: no cycle anywhere, and the web layer below the service.

Imports are read from the source with ``ast``, all of them: top-level, inside functions and
under ``if TYPE_CHECKING`` (a cycle only type checkers follow still ties the modules
together for a reader).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

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


# -- private Twisted names stay inside the fenced package (issue 15) ----------------------------

FENCED = "llamaswap/web/fast/"
TWISTED_PRIVATE_ATTRIBUTES = {
    # HTTPChannel / LineReceiver / Request / transports / the HTTP client
    "_respondToBadRequestAndDisconnect", "_transferDecoder", "_command", "_path", "_version",
    "_buffer", "_busyReceiving", "_receivedHeaderSize", "_receivedHeaderCount",
    "_dataBuffer", "_handlingRequest", "_waitingForTransport", "_networkProducer",
    "_requestProducer", "_savedTimeOut", "_abortingCall", "_finishRequestBody",
    "_maybeChooseTransferDecoder", "_channel", "_tempDataBuffer", "_tempDataLen",
    "_HTTP11ClientFactory", "_producer",
    # twisted.web.http_headers.Headers
    "_rawHeaders",
}


def private_twisted_uses(path: Path) -> Iterator[str]:
    """Where ``path`` names something private of Twisted: a private module or name imported
    from ``twisted``, a private method of Twisted's overridden, or a known private attribute
    of Twisted's objects (on anything but ``self``; on ``self`` too in a class with a Twisted
    base or a mixin meant for one, unless the class sets it up in its own ``__init__``)."""
    tree = ast.parse(path.read_text(), str(path))
    from_twisted: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "twisted":
            from_twisted.update(alias.asname or alias.name for alias in node.names)
            if any(part.startswith("_") for part in (node.module or "").split(".")):
                yield f"{path}:{node.lineno}: from {node.module} import"
            for alias in node.names:
                if alias.name.startswith("_"):
                    yield f"{path}:{node.lineno}: from {node.module} import {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "twisted" and any(part.startswith("_") for part in parts):
                    yield f"{path}:{node.lineno}: import {alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and isinstance(
                node.value, ast.Name) and node.value.id == "twisted":
            yield f"{path}:{node.lineno}: twisted.{node.attr}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("getattr", "setattr", "hasattr", "delattr") and \
                len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and \
                node.args[1].value in TWISTED_PRIVATE_ATTRIBUTES:
            yield f"{path}:{node.lineno}: {node.func.id}(..., {node.args[1].value!r})"
    yield from _private_attributes(path, tree, from_twisted)


def _private_attributes(path: Path, tree: ast.Module, from_twisted: set[str]) -> Iterator[str]:
    def base_names(cls: ast.ClassDef) -> set[str]:
        return {b.id if isinstance(b, ast.Name) else b.attr for b in cls.bases
                if isinstance(b, ast.Name | ast.Attribute)}

    def own_state(cls: ast.ClassDef) -> set[str]:
        names = set()
        for item in cls.body:
            if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                for node in ast.walk(item):
                    if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                        names.add(node.attr)
        return names

    def visit(node: ast.AST, cls: ast.ClassDef | None) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                yield from visit(child, child)
                continue
            if isinstance(child, ast.FunctionDef) and cls is not None and \
                    child.name in TWISTED_PRIVATE_ATTRIBUTES:
                yield f"{path}:{child.lineno}: def {child.name}"  # overrides a private method
            if isinstance(child, ast.Attribute) and child.attr in TWISTED_PRIVATE_ATTRIBUTES \
                    and not (isinstance(child.value, ast.Name) and child.value.id == "twisted"):
                on_self = isinstance(child.value, ast.Name) and child.value.id == "self"
                twisted_class = cls is not None and (
                    bool(base_names(cls) & from_twisted) or cls.name.endswith("Mixin")
                    or any(name.endswith("Mixin") for name in base_names(cls)))
                if not on_self or (twisted_class and child.attr not in own_state(cls)):
                    yield f"{path}:{child.lineno}: .{child.attr}"
            yield from visit(child, cls)

    yield from visit(tree, None)


def test_no_private_twisted_name_outside_the_fenced_package() -> None:
    root = PACKAGE.parent
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(FENCED):
            continue
        found.extend(private_twisted_uses(path))
    assert found == []


def test_the_private_name_scan_sees_each_kind_of_use(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import twisted.web._abnf\n"
        "from twisted.web._newclient import HTTP11ClientProtocol\n"
        "from twisted.web.client import _HTTP11ClientFactory\n"
        "from twisted.web.http import HTTPChannel\n"
        "import twisted\n"
        "x = twisted._version\n"
        "def f(channel, request):\n"
        "    channel._respondToBadRequestAndDisconnect()\n"
        "    return request._channel, getattr(channel, '_path', None)\n"
        "class Channel(HTTPChannel):\n"
        "    def g(self):\n"
        "        return self._transferDecoder\n"
        "    def _respondToBadRequestAndDisconnect(self):\n"
        "        pass\n"
        "class StrictMixin:\n"
        "    def h(self):\n"
        "        return self._buffer\n"
        "class Own:\n"  # not Twisted's: its own state under the same name is fine
        "    def __init__(self):\n"
        "        self._buffer = b''\n"
        "    def i(self):\n"
        "        return self._buffer\n")
    lines = sorted(int(use.split(":")[1]) for use in private_twisted_uses(probe))
    assert lines == [1, 2, 3, 6, 8, 9, 9, 12, 13, 17]


# The list above names what llamaswap once touched; this second scan needs no list. For every
# class with a Twisted base, it gathers the private names that base's classes define (class
# attributes, and attributes their methods set on ``self``, name-mangled ones included) and
# looks for them on ``self`` in the llamaswap classes of its MRO (mixins included).


def twisted_private_names(cls: type) -> set[str]:
    names: set[str] = set()
    for base in cls.__mro__:
        if not (getattr(base, "__module__", "") or "").startswith("twisted."):
            continue
        names.update(n for n in vars(base) if n.startswith("_") and not n.endswith("__"))
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(base)))
        except (OSError, TypeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id == "self" and node.attr.startswith("_") and \
                    not node.attr.endswith("__"):
                private = node.attr
                names.add(f"_{base.__name__.lstrip('_')}{private}" if private.startswith("__")
                          else private)
    return names


def private_uses_through_bases(module: ModuleType) -> Iterator[str]:
    """``self.<name>`` or ``def <name>`` in ``module``'s classes (and their llamaswap bases)
    where ``<name>`` is private to one of the class's Twisted bases."""
    for name, cls in sorted(vars(module).items()):
        if not inspect.isclass(cls) or cls.__module__ != module.__name__:
            continue
        private = twisted_private_names(cls)
        if not private:
            continue
        for part in cls.__mro__:
            where = getattr(part, "__module__", "") or ""
            if where.startswith("twisted.") or where == "builtins" or \
                    where.startswith(FENCED.rstrip("/").replace("/", ".")):
                continue
            tree = ast.parse(textwrap.dedent(inspect.getsource(part)))
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                        node.value.id == "self" and node.attr in private:
                    yield f"{where}.{part.__name__} (in {name}): self.{node.attr}"
                elif isinstance(node, ast.FunctionDef) and node.name in private:
                    yield f"{where}.{part.__name__} (in {name}): def {node.name}"


def test_no_class_touches_its_twisted_bases_private_state_outside_the_fenced_package() -> None:
    found: list[str] = []
    for module_name in sorted(module_names()):
        if module_name.startswith(FENCED.rstrip("/").replace("/", ".")) or \
                module_name.endswith("__main__"):
            continue
        found.extend(private_uses_through_bases(importlib.import_module(module_name)))
    assert sorted(set(found)) == []


def test_the_base_class_scan_sees_private_state_set_read_and_overridden(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "probe_bases.py").write_text(
        "from twisted.web.http import HTTPChannel\n"
        "class CountingMixin:\n"
        "    def count(self):\n"
        "        return self._receivedHeaderCount\n"
        "class Channel(CountingMixin, HTTPChannel):\n"
        "    def first(self):\n"
        "        self._HTTPChannel__first_line = 0\n"
        "        return self.mine\n"
        "    def _respondToBadRequestAndDisconnect(self):\n"
        "        pass\n"
        "class Plain:\n"  # no Twisted base: its own state, whatever its names
        "    def __init__(self):\n"
        "        self._receivedHeaderCount = 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = list(private_uses_through_bases(importlib.import_module("probe_bases")))
    assert sorted(found) == [
        "probe_bases.Channel (in Channel): def _respondToBadRequestAndDisconnect",
        "probe_bases.Channel (in Channel): self._HTTPChannel__first_line",
        "probe_bases.CountingMixin (in Channel): self._receivedHeaderCount",
    ]
