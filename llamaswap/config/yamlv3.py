# -*- test-case-name: tests.test_config -*-
"""YAML read the way Go's yaml.v3 reads it, which llama-swap configs are written for.

``load_yaml`` parses one document with yaml.v3's scalar rules (numbers as ``strconv`` reads
them, only ``true``/``false`` as booleans, timestamps as text, duplicate keys an error) and
refuses alias bombs; ``yaml_problem`` turns PyYAML's report into one line.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["MAX_EXPANDED_NODES", "V3_BOOL_STRINGS", "load_yaml", "yaml_problem"]

MAX_EXPANDED_NODES = 100_000


_NUMBER_TAG = "tag:llamaswap:number"
_NUMBERISH_RE = re.compile(
    r"^[-+]?(?:[0-9]|\.[0-9])[0-9a-zA-Z_.+-]*$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$")
_V3_FLOAT_RE = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_SPECIAL_FLOATS = {
    **{s: math.inf for s in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")},
    **{s: -math.inf for s in ("-.inf", "-.Inf", "-.INF")},
    **{s: math.nan for s in (".nan", ".NaN", ".NAN")},
}
V3_BOOL_STRINGS = {
    **{s: True for s in ("y", "Y", "yes", "Yes", "YES", "on", "On", "ON")},
    **{s: False for s in ("n", "N", "no", "No", "NO", "off", "Off", "OFF")},
}


def _go_int(text: str) -> int | None:
    """Go's ``strconv.ParseInt(text, 0, 64)``, then ``ParseUint``: prefixes ``0x``/``0o``/``0b``,
    ``0`` is octal, and the value must fit 64 bits (a larger one is left to ``ParseFloat``)."""
    sign, digits = 1, text
    if digits[:1] in ("+", "-"):
        sign, digits = (-1 if digits[0] == "-" else 1), digits[1:]
    base = 10
    prefix = digits[:2].lower()
    if prefix in ("0x", "0o", "0b"):
        base, digits = {"0x": 16, "0o": 8, "0b": 2}[prefix], digits[2:]
    elif digits.startswith("0") and len(digits) > 1:
        base, digits = 8, digits[1:]
    if not digits or not digits.isascii() or not digits.isalnum():
        return None
    try:
        value = sign * int(digits, base)
    except ValueError:  # not digits of that base, or more digits than Python converts
        return None
    fits_int64 = -(1 << 63) <= value < (1 << 63)
    fits_uint64 = text[:1] not in ("+", "-") and 0 <= value < (1 << 64)
    return value if fits_int64 or fits_uint64 else None


def _v3_number(text: str) -> int | float | str:
    """Resolve a plain scalar that looks numeric the way yaml.v3 does; otherwise keep the text."""
    if text in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[text]
    plain = text.replace("_", "")
    as_int = _go_int(plain)
    if as_int is not None:
        return as_int
    if _V3_FLOAT_RE.match(plain):
        as_float = float(plain)
        if not math.isinf(as_float):  # Go's ParseFloat reports a range error: stays a string
            return as_float
    return text


class _Loader(yaml.SafeLoader):
    """PyYAML reading scalars like Go's yaml.v3, which llama-swap configs are written for.

    YAML 1.1 would turn ``fa: on`` into ``True`` and ``10:30`` into 630; yaml.v3 keeps both
    as strings. Only ``true``/``false`` are booleans, timestamps stay strings, numbers follow
    ``strconv``, map keys are their source text, and a duplicate key is an error.
    """

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, MappingNode):
            raise ConstructorError(None, None, "expected a mapping", node.start_mark)
        first: dict[str, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, ScalarNode):
                continue
            if key_node.value in first:
                raise ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"mapping key {key_node.value!r} already defined at line "
                    f"{first[key_node.value].line + 1}", key_node.start_mark)
            first[key_node.value] = key_node.start_mark
        self.flatten_mapping(node)
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise ConstructorError("while constructing a mapping", node.start_mark,
                                       "mapping keys must be scalars", key_node.start_mark)
            mapping[key_node.value] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_number(self, node: ScalarNode) -> int | float | str:
        return _v3_number(node.value)

    def construct_explicit_int(self, node: ScalarNode) -> int:
        _scalar_only(node, "!!int")
        value = _go_int(node.value.replace("_", ""))
        if value is None:
            raise ConstructorError(None, None, f"cannot decode {node.value!r} as !!int",
                                   node.start_mark)
        return value

    def construct_explicit_float(self, node: ScalarNode) -> float:
        _scalar_only(node, "!!float")
        value = _v3_number(node.value)
        if isinstance(value, str):
            raise ConstructorError(None, None, f"cannot decode {node.value!r} as !!float",
                                   node.start_mark)
        return float(value)

    def construct_text(self, node: ScalarNode) -> str:
        """!!timestamp stays text (as yaml.v3 does for untyped values)."""
        _scalar_only(node, str(node.tag))
        return str(node.value)

    def construct_binary_text(self, node: ScalarNode) -> str:
        return self.construct_yaml_binary(node).decode("utf-8", "replace")

    def construct_unsupported(self, node: Node) -> Any:
        raise ConstructorError(None, None, f"the tag {node.tag} is not supported", node.start_mark)


_Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"),
                              ["~", "n", "N", ""])
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                              re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(_NUMBER_TAG, _NUMBERISH_RE, list("-+0123456789."))
_Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])
_Loader.add_constructor(_NUMBER_TAG, _Loader.construct_number)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_explicit_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_explicit_float)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_text)
_Loader.add_constructor("tag:yaml.org,2002:binary", _Loader.construct_binary_text)
for _tag in ("omap", "pairs", "set"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _Loader.construct_unsupported)


def _check_node_graph(root: Node) -> None:
    """Reject self-containing anchors and alias bombs before anything walks the tree."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConstructorError(None, None, "anchor value contains itself", node.start_mark)
        active.add(key)
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        total = 1 + sum(size(child) for child in children)
        active.discard(key)
        if total > MAX_EXPANDED_NODES:
            raise ConstructorError(None, None, "document contains excessive aliasing",
                                   node.start_mark)
        sizes[key] = total
        return total

    size(root)


def _scalar_only(node: Node, tag: str) -> None:
    """A scalar tag on a list or mapping (``!!int`` before ``models:``) is a YAML error."""
    if not isinstance(node, ScalarNode):
        raise ConstructorError(None, None, f"{tag} cannot tag a list or mapping",
                               node.start_mark)


def load_yaml(text: str) -> Any:
    """Parse one YAML document; ``yaml.YAMLError`` (or RecursionError) on failure."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node_graph(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def yaml_problem(error: yaml.YAMLError, text: str) -> str:
    """One line naming line and column, instead of PyYAML's multi-line report."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        message = error.problem or error.context or "invalid YAML"
        if error.context and error.problem:
            context = error.context
            if error.context_mark is not None:
                context += (f" at line {error.context_mark.line + 1}, "
                            f"column {error.context_mark.column + 1}")
            message += f" ({context})"
        return where + message
    if isinstance(error, yaml.reader.ReaderError):
        line = text.count("\n", 0, error.position) + 1
        return f"line {line}: unacceptable character #x{error.character:04x}: {error.reason}"
    return " ".join(str(error).split())
