# -*- test-case-name: tests.test_config -*-
"""llama-swap's macro language, applied to the untyped YAML value tree.

The pipeline mirrors llama-swap HEAD so that configs written for it expand identically:

1. ``${env.NAME}`` is replaced in the raw YAML *text* (``substitute_env``), so it also works
   inside flow lists; only references outside YAML comments must resolve.
2. ``expand_config_macros`` validates the ``macros`` declarations, strips comment lines from
   ``cmd``/``cmdStop``, defaults ``proxy``, substitutes global macros everywhere and, per model,
   ``MODEL_ID`` + globals + model macros, then allocates ``${PORT}`` in sorted model-ID order
   (a reload keeps each surviving model's port: ``allocate_ports``).
3. ``check_leftovers`` reports any ``${name}`` that survived (``${PID}`` only in ``cmdStop``).

Problems are reported through a callback ``report(key_path, message)`` so the caller can
collect all of them instead of stopping at the first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from llamaswap.config.cmdline import insert_literal, strip_comments

__all__ = [
    "DEFAULT_PROXY",
    "Expansion",
    "ExpansionBudget",
    "Macro",
    "MacroLimitError",
    "MacroValue",
    "Report",
    "allocate_ports",
    "check_leftovers",
    "env_refs_in_text",
    "env_refs_in_tree",
    "expand_config_macros",
    "go_format",
    "join_path",
    "merge_model_macros",
    "read_macros",
    "substitute",
    "restore_literals",
    "substitute_env",
]

MacroValue = str | int | float | bool
Macro = tuple[str, MacroValue]
Report = Callable[[str, str], None]
"""``report(key_path, message)``: one problem at a dotted key path."""

DEFAULT_PROXY = "http://localhost:${PORT}"
RESERVED = ("PID", "PORT", "MODEL_ID")
MACRO_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
MACRO_USE_RE = re.compile(r"\$\{([a-zA-Z0-9_-]+)\}")
ENV_MACRO_RE = re.compile(r"\$\{env\.([a-zA-Z_][a-zA-Z0-9_]*)\}")
MAX_PORT = 65535

# Model fields whose leftovers get llama-swap's "found in <model>.<field>" wording.
_NAMED_FIELDS = frozenset({"cmd", "cmdStop", "proxy", "checkEndpoint", "name", "description"})


def join_path(base: str, key: str | int) -> str:
    """``models`` + ``llama`` -> ``models.llama``; an int becomes ``[i]``."""
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


def _go_float(value: float) -> str:
    """Go's ``%v`` for a float64: shortest digits, exponent form below 1e-4 or from 1e6 up."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent += len(digit_tuple) - len(digits)
    point = len(digits) + exponent  # value == 0.<digits> * 10**point
    prefix = "-" if sign else ""
    exp10 = point - 1
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return prefix + digits + "0" * (point - len(digits))
    return f"{prefix}{digits[:point]}.{digits[point:]}"


def go_format(value: object) -> str:
    """Format a scalar like Go's ``%v``, which is how llama-swap interpolates macro values."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if value is None:
        return "<nil>"
    return str(value)


# --- ${env.NAME} -----------------------------------------------------------------------------


def env_refs_in_tree(tree: object, path: str = "") -> list[tuple[str, str]]:
    """``(key_path, NAME)`` for every ``${env.NAME}`` in a parsed tree (keys and values).

    Scanning the parsed tree instead of the text is what makes references inside YAML
    comments harmless, like llama-swap's comment-stripping re-marshal.
    """
    found: list[tuple[str, str]] = []
    _collect_env_refs(tree, path, found)
    return found


def _collect_env_refs(value: object, path: str, found: list[tuple[str, str]]) -> None:
    if isinstance(value, str):
        found.extend((path, name) for name in ENV_MACRO_RE.findall(value))
    elif isinstance(value, Mapping):
        for key, child in value.items():
            child_path = join_path(path, str(key))
            found.extend((child_path, name) for name in ENV_MACRO_RE.findall(str(key)))
            _collect_env_refs(child, child_path, found)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            _collect_env_refs(child, join_path(path, index), found)


def env_refs_in_text(text: str) -> list[tuple[str, str]]:
    """``("line N", NAME)`` for every ``${env.NAME}`` in raw text (used when YAML won't parse)."""
    return [
        (f"line {text.count(chr(10), 0, match.start()) + 1}", match.group(1))
        for match in ENV_MACRO_RE.finditer(text)
    ]


LITERAL_OPEN, LITERAL_CLOSE = "\ue000", "\ue001"
"""Around the number of an env value kept out of YAML and command-line parsing (two
private-use characters: plain word characters to YAML and to the command splitter)."""
_LITERAL_RE = re.compile(LITERAL_OPEN + "([0-9]+)" + LITERAL_CLOSE)
_QUOTING = frozenset("\"'\\")


def substitute_env(
    text: str, refs: Iterable[tuple[str, str]], environ: Mapping[str, str],
    literals: dict[str, str] | None = None,
) -> tuple[str, list[tuple[str, str]], set[str], dict[str, str]]:
    """Replace the referenced ``${env.NAME}`` throughout ``text``.

    Returns the new text, the problems as ``(where, message)``, the names that could not be
    substituted (so later leftover checks do not report them twice) and the values held
    back (placeholder -> value, for ``restore_literals``; added to ``literals`` if given, so
    that several sources of one configuration number theirs apart). Newlines, CR and NUL
    are rejected because they would change the YAML structure. A value with a quote or a
    backslash is inserted as a placeholder and put back after parsing, so its quotes never
    act as YAML or command-line quoting (``docs/differences.md``); other values go into the text as
    they are, so ``ttl: ${env.TTL}`` still reads a number."""
    problems: list[tuple[str, str]] = []
    failed: set[str] = set()
    done: set[str] = set()
    literals = {} if literals is None else literals
    for where, name in refs:
        if name in done or name in failed:
            continue
        value = environ.get(name)
        if value is None:
            problems.append((where, f"environment variable '{name}' is not set"))
            failed.add(name)
            continue
        if any(c in value for c in "\n\r\x00"):
            problems.append((where, f"environment variable '{name}' contains newlines or null "
                                    "bytes which are not allowed in YAML substitution"))
            failed.add(name)
            continue
        if _QUOTING.intersection(value):
            placeholder = f"{LITERAL_OPEN}{len(literals)}{LITERAL_CLOSE}"
            literals[placeholder] = value
            value = placeholder
        text = text.replace("${env." + name + "}", value)
        done.add(name)
    return text, problems, failed, literals


def restore_literals(tree: Any, literals: Mapping[str, str], command_keys: Collection[str],
                     in_models: bool = False) -> Any:
    """Put the env values ``substitute_env`` held back into every string of the
    tree. In a model's ``cmd`` and ``cmdStop`` a value is escaped for where it stands
    (``cmdline.insert_literal``), so splitting the command gives it back unchanged."""
    if not literals:
        return tree
    if isinstance(tree, str):
        return _LITERAL_RE.sub(lambda m: literals.get(m.group(0), m.group(0)), tree)
    if isinstance(tree, list):
        return [restore_literals(v, literals, command_keys) for v in tree]
    if isinstance(tree, dict):
        out: dict[Any, Any] = {}
        for key, value in tree.items():
            new_key = restore_literals(key, literals, command_keys)
            if in_models and key in command_keys and isinstance(value, str):
                out[new_key] = insert_literal(value, literals)
            elif key == "models" and not in_models and isinstance(value, dict):
                out[new_key] = {restore_literals(mid, literals, command_keys):
                                restore_literals(model, literals, command_keys, True)
                                if isinstance(model, dict) else model
                                for mid, model in value.items()}
            else:
                out[new_key] = restore_literals(value, literals, command_keys)
        return out
    return tree


# --- declarations --------------------------------------------------------------------------


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _macro_problem(name: str, value: object) -> str | None:
    """llama-swap's ``validateMacro``: the first thing wrong with one declaration, if any."""
    if len(name) >= 64:
        return f"macro name '{name}' exceeds maximum length of 63 characters"
    if not MACRO_NAME_RE.match(name):
        return (f"macro name '{name}' contains invalid characters, "
                "must match pattern ^[a-zA-Z0-9_-]+$")
    if isinstance(value, str):
        if "${" + name + "}" in value:
            return f"macro '{name}' contains self-reference"
    elif not isinstance(value, int | float | bool):
        return (f"macro '{name}' has invalid type {_type_name(value)}, "
                "must be a scalar type (string, int, float, or bool)")
    if name in RESERVED:
        return f"macro name '{name}' is reserved"
    return None


def read_macros(raw: object, path: str, report: Report) -> tuple[list[Macro], set[str]]:
    """The valid declarations of a ``macros:`` block in order, and the names that were invalid.

    Invalid entries are reported and left out, so one bad macro does not hide other problems.
    """
    if raw is None:
        return [], set()
    if not isinstance(raw, Mapping):
        report(path, "macros must be a mapping")
        return [], set()
    macros: list[Macro] = []
    bad: set[str] = set()
    for name, value in raw.items():
        name = str(name)
        problem = _macro_problem(name, value)
        if problem is not None:
            report(join_path(path, name), problem)
            bad.add(name)
        else:
            macros.append((name, value))
    return macros, bad


def merge_model_macros(
    model_id: str, global_: Sequence[Macro], local: Sequence[Macro]
) -> list[Macro]:
    """``[MODEL_ID, *globals, *model]``; a model macro redefining a global keeps its position."""
    merged: list[Macro] = [("MODEL_ID", model_id), *global_]
    for name, value in local:
        for index, (existing, _) in enumerate(merged):
            if existing == name:
                merged[index] = (name, value)
                break
        else:
            merged.append((name, value))
    return merged


# --- substitution --------------------------------------------------------------------------


MAX_EXPANDED_CHARS = 1 << 20
"""Longest a single value may grow to by macro expansion (characters)."""
MAX_EXPANSION_GROWTH = 16 << 20
"""Most characters macro expansion may add to the whole config."""
MAX_EXPANSION_STEPS = 1_000_000
"""Most macro applications to values holding a ``${``, across the config (about a second)."""


class MacroLimitError(Exception):
    """Expansion went past a limit: a macro chain that doubles its text, or sheer size."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass
class ExpansionBudget:
    """What one config's macro expansion has used so far (see the ``MAX_EXPANSION_*``)."""

    steps: int = 0
    growth: int = 0

    def spend(self, path: str, name: str, steps: int = 1, growth: int = 0) -> None:
        self.steps += steps
        self.growth += growth
        if self.steps > MAX_EXPANSION_STEPS:
            raise MacroLimitError(path, f"macro expansion needs more than {MAX_EXPANSION_STEPS} "
                                  f"steps (at macro '{name}'); use fewer macros or models")
        if self.growth > MAX_EXPANSION_GROWTH:
            raise MacroLimitError(path, f"macro expansion adds more than {MAX_EXPANSION_GROWTH} "
                                  f"characters to the config (at macro '{name}')")


_Prepared = tuple[str, str, MacroValue, str]  # name, ${name}, typed value, its text


def _substitute_string(value: str, macros: Sequence[_Prepared], path: str,
                       budget: ExpansionBudget) -> Any:
    if "${" not in value:
        return value
    result: Any = value
    for name, slug, macro_value, text in macros:
        budget.spend(path, name)
        if result == slug:
            result = macro_value
            if not isinstance(result, str):
                return result
            continue
        if slug not in result:
            continue
        size = len(result) + result.count(slug) * (len(text) - len(slug))
        if size > MAX_EXPANDED_CHARS:
            raise MacroLimitError(path, f"macro '{name}' makes this value longer than "
                                  f"{MAX_EXPANDED_CHARS} characters (a macro repeating another "
                                  "macro doubles the text at every step)")
        budget.spend(path, name, steps=0, growth=max(size - len(result), 0))
        result = result.replace(slug, text)
    return result


def _substitute_tree(value: Any, macros: Sequence[_Prepared], path: str,
                     budget: ExpansionBudget) -> Any:
    if isinstance(value, str):
        return _substitute_string(value, macros, path, budget)
    if isinstance(value, dict):
        return {k: _substitute_tree(v, macros, join_path(path, str(k)), budget)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_tree(v, macros, join_path(path, i), budget)
                for i, v in enumerate(value)]
    return value


def substitute(value: Any, macros: Sequence[Macro], path: str = "",
               budget: ExpansionBudget | None = None) -> Any:
    """Apply ``macros`` to every string in ``value`` (map keys excluded), last declared first.

    The reverse order is what lets a macro use *earlier* macros. A string that is exactly
    ``${m}`` takes the macro's typed value (so ``port: ${PORT}`` stays an int). Returns a
    new tree; the input is not modified (YAML aliases share objects). ``MacroLimitError``
    (naming the value's ``path`` and the macro) when ``budget`` runs out or a value grows
    past ``MAX_EXPANDED_CHARS``.
    """
    prepared = [(name, "${" + name + "}", macro_value, go_format(macro_value))
                for name, macro_value in reversed(macros)]
    return _substitute_tree(value, prepared, path,
                            ExpansionBudget() if budget is None else budget)


@dataclass
class Expansion:
    """The macro-expanded tree plus what the loader needs to know about it."""

    tree: dict[str, Any]
    ports: dict[str, int] = field(default_factory=dict)
    """Model id -> the ``${PORT}`` it was given."""
    invalid_macros: set[str] = field(default_factory=set)
    """Declared but rejected names: their uses are not reported a second time."""
    port_reported: set[str] = field(default_factory=set)
    """Models already told that proxy uses ``${PORT}`` without cmd."""
    aborted: bool = False
    """A limit stopped the expansion (reported): the tree is not fit for decoding."""


def _start_port(value: object) -> int:
    """startPort for allocation; a bad value is reported by the loader, 5800 is used meanwhile."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PORT:
        return value
    return 5800


def _substitute_param_id_keys(model: dict[str, Any], macros: Sequence[Macro], path: str,
                              report: Report, budget: ExpansionBudget) -> dict[str, Any]:
    """Expand macros in the keys of ``filters.setParamsByID`` too: they are model names a
    request may use (llama-swap does the same). Two keys expanding alike are an error."""
    filters = model.get("filters")
    by_id = filters.get("setParamsByID") if isinstance(filters, dict) else None
    if not isinstance(by_id, dict):
        return model
    expanded: dict[Any, Any] = {}
    for key, params in by_id.items():
        name = substitute(key, macros, join_path(path, str(key)), budget) \
            if isinstance(key, str) else key
        name = go_format(name) if not isinstance(name, str) else name
        if name in expanded:
            report(join_path(path, str(key)),
                   f"key {key!r} expands to {name!r}, which an earlier key already names")
        expanded[name] = params
    assert isinstance(filters, dict)
    return {**model, "filters": {**filters, "setParamsByID": expanded}}


def allocate_ports(models: Sequence[str], start_port: int,
                   keep: Mapping[str, int]) -> dict[str, int]:
    """``${PORT}`` for each of ``models``: a model listed in ``keep`` keeps its port; every
    other one, in sorted order, takes the lowest port from ``start_port`` up that no kept
    model holds. With nothing to keep this is llama-swap's sorted-order allocation; on a
    reload it is what keeps a running model's port (and so its process) when others come
    and go (``docs/reload.md``)."""
    kept = {m: keep[m] for m in models if m in keep}
    taken = set(kept.values())
    ports = dict(kept)
    candidate = start_port
    for model_id in sorted(models):
        if model_id in kept:
            continue
        while candidate in taken:
            candidate += 1
        ports[model_id] = candidate
        taken.add(candidate)
    return ports


def expand_config_macros(tree: Mapping[str, Any], report: Report,
                         keep_ports: Mapping[str, int] | None = None) -> Expansion:
    """Expand global, then per-model macros and allocate ``${PORT}`` (resolveConfigMacros).

    ``keep_ports``: model id -> port from the configuration being replaced (``allocate_ports``).

    Expansion is bounded (``MacroLimitError``): past a limit the problem is reported and the
    result is marked ``aborted``.
    """
    budget = ExpansionBudget()
    try:
        return _expand(tree, report, budget, keep_ports)
    except MacroLimitError as e:
        report(e.path, e.message)
        return Expansion(tree={}, aborted=True)


def _expand(tree: Mapping[str, Any], report: Report, budget: ExpansionBudget,
            keep_ports: Mapping[str, int] | None) -> Expansion:
    global_macros, invalid = read_macros(tree.get("macros"), "macros", report)
    out: dict[str, Any] = {k: v for k, v in tree.items() if k != "macros"}
    for key in out:
        if key != "models":
            out[key] = substitute(out[key], global_macros, key, budget)
    expansion = Expansion(tree=out, invalid_macros=invalid)

    models = tree.get("models")
    if not isinstance(models, dict):
        return expansion
    prepared: dict[str, dict[str, Any]] = {}
    local: dict[str, list[Macro]] = {}
    for model_id, model in models.items():
        if model is None:
            model = {}  # an empty entry still gets the default proxy; cmd is reported missing
        if not isinstance(model, dict):
            continue
        local[model_id], bad = read_macros(model.get("macros"), f"models.{model_id}.macros", report)
        expansion.invalid_macros |= bad
        copy = {k: v for k, v in model.items() if k != "macros"}
        for name in ("cmd", "cmdStop"):
            if isinstance(copy.get(name), str):
                copy[name] = strip_comments(copy[name])
        if copy.get("proxy") is None:
            copy["proxy"] = DEFAULT_PROXY
        prepared[model_id] = copy

    start_port = _start_port(out.get("startPort"))
    wants_port: list[str] = []
    for model_id in sorted(prepared):
        merged = merge_model_macros(model_id, global_macros, local[model_id])
        model = _substitute_param_id_keys(
            substitute(prepared[model_id], merged, f"models.{model_id}", budget), merged,
            f"models.{model_id}.filters.setParamsByID", report, budget)
        cmd, proxy = model.get("cmd"), model.get("proxy")
        if isinstance(cmd, str) and "${PORT}" in cmd:
            wants_port.append(model_id)
        elif isinstance(proxy, str) and "${PORT}" in proxy:
            expansion.port_reported.add(model_id)
            if isinstance(cmd, str):  # a missing cmd is reported on its own
                report(f"models.{model_id}.proxy", "proxy uses ${PORT} but cmd does not - "
                       "${PORT} is only available when used in cmd")
        prepared[model_id] = model
    for model_id, port in allocate_ports(wants_port, start_port, keep_ports or {}).items():
        if port > MAX_PORT:
            report(f"models.{model_id}.cmd",
                   f"no port left for ${{PORT}}: {port} is above {MAX_PORT}")
        prepared[model_id] = substitute(prepared[model_id], [("PORT", port)],
                                        f"models.{model_id}", budget)
        expansion.ports[model_id] = port
    out["models"] = {mid: prepared.get(mid, model) for mid, model in models.items()}
    return expansion


# --- leftovers -----------------------------------------------------------------------------


def _hint(name: str, field: str) -> str:
    if name == "PID":
        return " (${PID} is only available in cmdStop)"
    if name == "PORT":
        return " (${PORT} is only available when used in cmd)"
    return ""


def _leftovers_in(
    value: Any, path: str, field: str, model_id: str | None, report: Report, skip: Collection[str],
    skip_env: Collection[str],
) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            child_field = f"{field}.{key}" if model_id is not None else field
            _leftovers_in(child, join_path(path, str(key)), child_field, model_id, report, skip,
                          skip_env)
        return
    if isinstance(value, list):
        for index, child in enumerate(value):
            _leftovers_in(child, join_path(path, index), field, model_id, report, skip, skip_env)
        return
    if not isinstance(value, str):
        return
    seen: set[str] = set()
    for name in MACRO_USE_RE.findall(value):
        if name in seen or name in skip or (name == "PID" and field == "cmdStop"):
            continue
        seen.add(name)
        if model_id is None:
            report(path, f"unknown macro '${{{name}}}'")
        elif field in _NAMED_FIELDS:
            if name in ("PORT", "MODEL_ID"):
                message = f"macro '${{{name}}}' should have been substituted in {model_id}.{field}"
            else:
                message = f"unknown macro '${{{name}}}' found in {model_id}.{field}"
            report(path, message + _hint(name, field))
        else:
            top = field.split(".", 1)[0]
            context = f"model {model_id} " + ("metadata" if top == "metadata" else field)
            report(path, f"{context}: unknown macro '${{{name}}}'{_hint(name, field)}")
    for name in dict.fromkeys(ENV_MACRO_RE.findall(value)):
        if name not in skip_env:
            report(path, f"environment variable '{name}' not set")


def check_leftovers(
    expansion: Expansion,
    top_keys: Collection[str],
    model_keys: Collection[str],
    report: Report,
    skip_env: Collection[str] = (),
) -> None:
    """Report every ``${name}`` left after expansion in the keys the loader actually uses."""
    skip = expansion.invalid_macros
    for key, value in expansion.tree.items():
        if key not in top_keys:
            continue
        if key != "models":
            _leftovers_in(value, key, key, None, report, skip, skip_env)
            continue
        if not isinstance(value, dict):
            continue
        for model_id, model in value.items():
            if not isinstance(model, dict):
                continue
            for name, child in model.items():
                if name not in model_keys:
                    continue
                if name == "proxy" and model_id in expansion.port_reported:
                    continue
                _leftovers_in(child, f"models.{model_id}.{name}", name, model_id, report, skip,
                              skip_env)
