"""Request-body filters (a model's ``filters``, applied in llama-swap's order). Pure code.

A model (or peer) may strip parameters from JSON request bodies, force others, and force
others still depending on the name the client asked for (``setParamsByID``, whose keys are
registered as aliases). ``model`` itself is never touched by a filter: routing owns it.

Keys are paths in the ``sjson`` style llama-swap uses: ``a.b`` is key ``b`` inside object ``a``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PROTECTED = "model"


@dataclass(frozen=True)
class Filters:
    strip_params: tuple[str, ...] = ()
    """Sorted, de-duplicated, never containing ``model``."""
    set_params: Mapping[str, Any] = field(default_factory=dict)
    set_params_by_id: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Requested name (model ID or alias) -> params applied after ``set_params``."""

    def __bool__(self) -> bool:
        return bool(self.strip_params or self.set_params or self.set_params_by_id)


def parse_strip_params(text: str) -> tuple[str, ...]:
    """``"temperature, top_p,model"`` -> ``("temperature", "top_p")``: trimmed, sorted."""
    names = {part.strip() for part in text.split(",")}
    return tuple(sorted(n for n in names if n and n != PROTECTED))


def _delete(body: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    node: Any = body
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(last, None)


def _set(body: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = body
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[last] = copy.deepcopy(value)


def apply_filters(body: dict[str, Any], filters: Filters, requested: str,
                  use_model_name: str = "") -> bool:
    """Rewrite ``body`` in place: useModelName, stripParams, setParams, setParamsByID.

    Returns whether anything changed, so an untouched body can be forwarded byte for byte.
    """
    before = copy.deepcopy(body) if filters else None
    changed = False
    if use_model_name and body.get(PROTECTED) != use_model_name:
        body[PROTECTED] = use_model_name
        changed = True
    if not filters:
        return changed
    for path in filters.strip_params:
        _delete(body, path)
    for params in (filters.set_params, filters.set_params_by_id.get(requested, {})):
        for path in sorted(params):
            if path.split(".")[0] != PROTECTED:
                _set(body, path, params[path])
    if before is not None:
        before[PROTECTED] = body.get(PROTECTED)
        changed = changed or before != body
    return changed
