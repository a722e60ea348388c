# -*- test-case-name: tests.test_schema -*-
"""Structural validation of the config tree against the shipped JSON Schema.

``schema.json`` (beside this module; ``config/schema.json`` links to it for editors) is the one
description of which keys exist, their types and their ranges. ``check_structure`` runs it over
the macro-expanded tree and turns every finding into a key path and a one-line message:

- a key the schema does not know: a warning, with the closest known key as a hint;
- a key the schema marks with ``x-ignored`` (a llama-swap feature llamaswap does not implement
  yet): a warning carrying that message, when the key is set to anything;
- anything else (wrong type, out of range, missing, not one of the allowed values): an error.

Values under a property marked ``x-secret`` (API keys) are never quoted back.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from llamaswap.config.macros import go_format, join_path

__all__ = [
    "Finding",
    "MODEL_KEYS",
    "SCHEMA",
    "TOP_KEYS",
    "check_structure",
    "describe",
    "is_set",
    "used_keys",
]

SCHEMA: Mapping[str, Any] = json.loads(
    resources.files("llamaswap.config").joinpath("schema.json").read_text("utf-8"))

_IGNORED = "x-ignored"
_SECRET = "x-secret"
_RANGE_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_TYPE_WORDS = {"integer": "an integer", "number": "a number", "string": "a string",
               "boolean": "true or false", "object": "a mapping", "array": "a list"}
_MAX_QUOTED = 60


def used_keys(node: Mapping[str, Any]) -> frozenset[str]:
    """The keys of a schema object node that llamaswap reads (declared and not ``x-ignored``)."""
    return frozenset(k for k, v in node.get("properties", {}).items() if _IGNORED not in v)


TOP_KEYS = used_keys(SCHEMA)
MODEL_KEYS = used_keys(SCHEMA["properties"]["models"]["additionalProperties"])


def is_set(value: object) -> bool:
    """Whether an ignored key carries anything (null, false and empty values change nothing)."""
    return not (value is None or value is False or value == "" or value == [] or value == {})


def describe(value: object) -> str:
    """How a wrong value is quoted back to the user: short, on one line."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    text = repr(value) if isinstance(value, str) else go_format(value)
    if len(text) > _MAX_QUOTED:
        text = f"{text[:_MAX_QUOTED - 20]}... ({len(text)} characters)"
    return text


@dataclass(frozen=True)
class Finding:
    """One structural problem: an error, or a warning when ``warning`` is true."""

    path: str
    message: str
    warning: bool = False


def _ignored_keyword(validator: Any, message: str, instance: object,
                     schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if is_set(instance):
        yield ValidationError(message)


@cache
def _validator() -> Any:
    """The Draft 2020-12 validator, taught the ``x-ignored`` keyword (built once)."""
    base = jsonschema.Draft202012Validator
    cls = jsonschema.validators.extend(base, {_IGNORED: _ignored_keyword})
    return cls(SCHEMA)


def _secret_names(node: object, found: set[str], name: str = "") -> set[str]:
    """Names of the properties marked ``x-secret`` anywhere in the schema.

    A value is hidden when any key on its path has such a name: this errs towards hiding.
    """
    if isinstance(node, Mapping):
        if node.get(_SECRET) and name:
            found.add(name)
        for key, child in node.items():
            props = child if key == "properties" and isinstance(child, Mapping) else None
            if props is not None:
                for prop, sub in props.items():
                    _secret_names(sub, found, prop)
            else:
                _secret_names(child, found, name)
    elif isinstance(node, list):
        for child in node:
            _secret_names(child, found, name)
    return found


_SECRETS = frozenset(_secret_names(SCHEMA, set()))


def _path(parts: Sequence[str | int]) -> str:
    path = ""
    for part in parts:
        path = join_path(path, part)
    return path


def _quote(error: ValidationError, value: object) -> str:
    if any(part in _SECRETS for part in error.absolute_path if isinstance(part, str)):
        return "(hidden)"
    return describe(value)


def _expected(schema: Mapping[str, Any]) -> list[str]:
    """What a schema (or its ``anyOf``/``oneOf`` branches) accepts, in words."""
    words: list[str] = []
    kinds = schema.get("type")
    for kind in [kinds] if isinstance(kinds, str) else kinds or []:
        if kind in _TYPE_WORDS:
            words.append(_TYPE_WORDS[kind])
    if "enum" in schema:
        words.append("one of " + ", ".join(repr(v) for v in schema["enum"] if v != ""))
    for branch in [*schema.get("anyOf", ()), *schema.get("oneOf", ())]:
        if "$ref" in branch:
            continue  # a macro reference or a spelling of true/false: not worth listing
        words.extend(w for w in _expected(branch) if w not in words)
    return words


def _range_message(error: ValidationError, value: object) -> str:
    bound = go_format(error.validator_value)
    relation = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">",
                "exclusiveMaximum": "<"}[str(error.validator)]
    return f"must be {relation} {bound}, got {_quote(error, value)}"


def _message(error: ValidationError) -> str:
    """One line for a schema error, in the loader's own words."""
    value = error.instance
    kind = str(error.validator)
    if kind in _RANGE_KEYWORDS:
        return _range_message(error, value)
    if kind in ("anyOf", "oneOf"):
        ranges = [e for e in error.context or () if str(e.validator) in _RANGE_KEYWORDS]
        if ranges:
            return _range_message(ranges[0], value)
    if kind in ("minItems", "minProperties"):
        return "must not be empty"
    expected = _expected(error.schema) if isinstance(error.schema, Mapping) else []
    if kind in ("type", "anyOf", "oneOf", "enum") and expected:
        return f"must be {' or '.join(expected)}, got {_quote(error, value)}"
    if kind == "pattern":
        return f"has an invalid format: {_quote(error, value)}"
    return f"invalid value {_quote(error, value)}"


Located = tuple[tuple[str | int, ...], Finding]


def _findings(error: ValidationError) -> Iterator[Located]:
    """The findings in one schema error, each with its path as a tuple of keys and indexes."""
    at = tuple(error.absolute_path)
    path = _path(at)
    kind = str(error.validator)
    if kind == _IGNORED:
        yield at, Finding(path, str(error.message), warning=True)
    elif kind == "additionalProperties" and isinstance(error.instance, Mapping):
        known = list(error.schema.get("properties", {}))
        candidates = {k.lower(): k for k in known}
        for key in error.instance:
            if key in known:
                continue
            close = difflib.get_close_matches(str(key).lower(), list(candidates), n=1,
                                              cutoff=0.6)
            hint = f" (did you mean '{candidates[close[0]]}'?)" if close else ""
            yield (*at, key), Finding(join_path(path, str(key)), f"unknown key, ignored{hint}",
                                      warning=True)
    elif kind == "required" and isinstance(error.instance, Mapping):
        for key in error.validator_value:
            if key not in error.instance:
                yield at, Finding(join_path(path, key), f"{key} is required")
    else:
        yield at, Finding(path, _message(error))


def _document_order(tree: object) -> dict[tuple[str | int, ...], int]:
    """Each path's position in a walk of the tree, so findings come in file order."""
    order: dict[tuple[str | int, ...], int] = {}

    def walk(value: object, path: tuple[str | int, ...]) -> None:
        order[path] = len(order)
        if isinstance(value, Mapping):
            for key, child in value.items():
                walk(child, (*path, key))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                walk(child, (*path, index))

    walk(tree, ())
    return order


def check_structure(tree: Mapping[str, Any]) -> list[Finding]:
    """Every structural problem of ``tree``, in the order the keys appear in the file."""
    order = _document_order(tree)
    located = [found for error in _validator().iter_errors(tree) for found in _findings(error)]
    located.sort(key=lambda item: order.get(item[0], len(order)))  # stable: ties keep order
    return [finding for _, finding in located]
