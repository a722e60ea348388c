"""llama-swap's matrix DSL: which models may run together, and the cheapest eviction.

``expr := and ('|' and)*``, ``and := atom ('&' atom)*``, ``atom := IDENT | '+'SET | '(' expr ')'``.
Each set denotes a family of model sets with subset semantics: any subset of a member may run
together. ``solve`` picks, among the member sets that contain the target, the one whose
eviction (running models outside it) costs least; ties go to the earlier set.
Pure code: no Twisted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

_TOKEN = re.compile(r"\s*(?:(?P<ident>[A-Za-z0-9_.-]+)|(?P<ref>\+[A-Za-z0-9_.-]+)|(?P<op>[&|()]))")
MAX_FAMILY = 4096
"""Member sets one expression may expand to; beyond it the config is refused, not slowed."""

Family = tuple[frozenset[str], ...]


class MatrixError(ValueError):
    """A set expression that cannot be compiled; the message is llama-swap's where it has one."""


@dataclass(frozen=True)
class Matrix:
    """Compiled sets, in definition order, each a family of model sets."""

    sets: tuple[tuple[str, Family], ...]
    evict_costs: Mapping[str, int]

    def solve(self, target: str, running: Iterable[str]) -> frozenset[str]:
        """The running models to evict so ``target`` can run (a model in no set runs alone)."""
        running = frozenset(running) - {target}
        best: tuple[int, frozenset[str]] | None = None
        for _name, family in self.sets:
            for members in family:
                if target not in members:
                    continue
                evict = running - members
                cost = sum(self.evict_costs.get(m, 1) for m in evict)
                if best is None or cost < best[0]:
                    best = (cost, evict)
        return running if best is None else best[1]


def compile_matrix(sets: Mapping[str, str], variables: Mapping[str, str],
                   evict_costs: Mapping[str, int], model_ids: Iterable[str]) -> Matrix:
    """Compile ``sets`` (name -> DSL) with ``variables`` (short name -> model id); an
    identifier is a variable or, failing that, one of ``model_ids``.

    Raises ``MatrixError`` for unknown identifiers, undefined or circular ``+refs`` and empty
    or malformed expressions.
    """
    compiled: dict[str, Family] = {}
    visiting: list[str] = []
    known = frozenset(model_ids)

    def compile_set(name: str) -> Family:
        if name in compiled:
            return compiled[name]
        if name in visiting:
            raise MatrixError(f'circular reference detected involving set "{name}"')
        if name not in sets:
            raise MatrixError(f'unknown set reference "+{name}"')
        visiting.append(name)
        family = _Parser(sets[name], name, variables, known, compile_set).parse()
        visiting.pop()
        compiled[name] = family
        return family

    ordered = tuple((name, compile_set(name)) for name in sets)
    costs = {variables.get(k, k): v for k, v in evict_costs.items()}
    return Matrix(ordered, costs)


class _Parser:
    def __init__(self, text: str, name: str, variables: Mapping[str, str],
                 known: frozenset[str], reference: Callable[[str], Family]) -> None:
        self._tokens = self._tokenize(text, name)
        self._pos = 0
        self._name = name
        self._variables = variables
        self._known = known
        self._reference = reference

    def _tokenize(self, text: str, name: str) -> list[tuple[str, str]]:
        tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match or match.end() == pos:
                raise MatrixError(f'set "{name}": unexpected character {text[pos:].strip()[:1]!r}')
            kind = match.lastgroup or "op"
            tokens.append((kind, match.group(kind)))
            pos = match.end()
        if not tokens:
            raise MatrixError(f'set "{name}": empty expression')
        return tokens

    def parse(self) -> Family:
        family = self._expr()
        if self._pos != len(self._tokens):
            raise MatrixError(f'set "{self._name}": unexpected {self._tokens[self._pos][1]!r}')
        return family

    def _peek(self) -> tuple[str, str] | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def _expr(self) -> Family:
        family = self._and()
        while self._peek() == ("op", "|"):
            self._pos += 1
            family = _dedupe(family + self._and())
        return family

    def _and(self) -> Family:
        family = self._atom()
        while self._peek() == ("op", "&"):
            self._pos += 1
            right = self._atom()
            family = _dedupe(tuple(a | b for a in family for b in right))
            if len(family) > MAX_FAMILY:
                raise MatrixError(f'set "{self._name}" expands to more than {MAX_FAMILY} sets')
        return family

    def _atom(self) -> Family:
        token = self._peek()
        if token is None:
            raise MatrixError(f'set "{self._name}": expression ends too early')
        self._pos += 1
        kind, text = token
        if kind == "ident":
            model = self._variables.get(text, text)
            if model not in self._known:
                raise MatrixError(f'set "{self._name}": unknown var or model "{text}"')
            return (frozenset({model}),)
        if kind == "ref":
            return self._reference(text[1:])
        if text == "(":
            family = self._expr()
            if self._peek() != ("op", ")"):
                raise MatrixError(f'set "{self._name}": missing ")"')
            self._pos += 1
            return family
        raise MatrixError(f'set "{self._name}": unexpected {text!r}')


def _dedupe(family: Family) -> Family:
    seen: dict[frozenset[str], None] = {}
    for members in family:
        seen.setdefault(members, None)
    return tuple(seen)
