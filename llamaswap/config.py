# -*- test-case-name: tests.test_config -*-
"""The configuration, as immutable values: what the rest of llamaswap reads.

Pure code: no Twisted imports. ``load_config`` turns a llama-swap compatible YAML file
into a ``Config`` or raises ``ConfigError`` listing every problem with its file and key path.

The pipeline follows llama-swap HEAD (reference §2.1): ``${env.X}`` on the raw text, YAML
parsing with yaml.v3's scalar rules, macro expansion and ``${PORT}`` allocation
(``llamaswap.macros``), then typed decoding with defaults and validation. Unlike llama-swap,
unknown and not-yet-supported keys are reported as warnings instead of being dropped silently.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from llamaswap.cmdline import split_command_checked
from llamaswap.filters import Filters, parse_strip_params
from llamaswap.macros import (
    Expansion,
    check_leftovers,
    env_refs_in_text,
    env_refs_in_tree,
    expand_config_macros,
    go_format,
    join_path,
    substitute_env,
)
from llamaswap.matrix import Matrix
from llamaswap.routing import SchedulerConfig, parse_matrix, parse_resources, parse_scheduler
from llamaswap.selectors import ProfileConfig, SelectorConfig, parse_profiles, parse_selectors
from llamaswap.supervision import SupervisionConfig, parse_supervision

__all__ = [
    "DEFAULT_GROUP",
    "Config",
    "ConfigError",
    "GroupConfig",
    "ModelConfig",
    "PeerConfig",
    "load_config",
    "parse_config",
]

DEFAULT_GROUP = "(default)"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` holds one line per problem.

    Each line names the file, the key path and what is wrong, e.g.
    ``config.yaml: models.llama.ttl: must be an integer >= 0, got 'x'``.
    """

    def __init__(self, problems: list[str], warnings: Sequence[str] = ()) -> None:
        super().__init__("\n".join([*problems, *(f"warning: {w}" for w in warnings)]))
        self.problems = problems
        self.warnings = tuple(warnings)
        """Non-fatal findings made on the way; a misspelt key often explains an error."""


@dataclass(frozen=True)
class ModelConfig:
    """One entry of ``models:``, after macro expansion and defaulting."""

    id: str
    cmd: tuple[str, ...]
    """argv after comment stripping, continuation joining and POSIX splitting (no shell)."""
    proxy: str
    """Base URL requests are forwarded to, e.g. ``http://127.0.0.1:5800``."""
    cmd_stop: str = ""
    """Raw stop command; ``${PID}`` is replaced, then it is split like ``cmd``."""
    check_endpoint: str | None = "/health"
    """Path polled until 200; ``None`` when the config says ``none``."""
    aliases: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    """Added to the inherited environment, in config order."""
    ttl: float = 0.0
    """Idle seconds before unloading; 0 means never (``globalTTL`` already applied)."""
    unload_timeout: float = 10.0
    """Seconds between SIGTERM (or ``cmdStop``) and SIGKILL."""
    unlisted: bool = False
    use_model_name: str = ""
    concurrency_limit: int = 10
    name: str = ""
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    port: int | None = None
    """The ``${PORT}`` allocated to this model, if its ``cmd`` uses it."""
    max_queue: int = 0
    """Requests that may wait for this model at once (429 beyond); 0 = unbounded."""
    send_loading_state: bool | None = None
    """Stream llama-swap style loading progress to chat clients; ``None``: the global value."""
    supervision: SupervisionConfig = field(default_factory=SupervisionConfig)
    resources: Mapping[str, float] = field(default_factory=dict)
    """What this model needs of the ``resources`` capacities while it runs."""
    filters: Filters = field(default_factory=Filters)
    upstream_headers: tuple[tuple[str, str], ...] = ()
    """Headers set on every request sent to this model's server (e.g. its own API key)."""


@dataclass(frozen=True)
class PeerConfig:
    """One entry of ``peers:``: a remote OpenAI-compatible server (§2.6)."""

    id: str
    proxy: str
    models: tuple[str, ...]
    api_key: str = ""
    filters: Filters = field(default_factory=Filters)
    ca_cert: str = ""
    """PEM file of the CA to trust for an https proxy instead of the system's roots."""
    connect_timeout: float = 30.0
    response_header_timeout: float = 60.0


@dataclass(frozen=True)
class GroupConfig:
    """A swap group (llama-swap ``groups:``); the implicit ``(default)`` group included."""

    id: str
    members: tuple[str, ...]
    swap: bool = True
    exclusive: bool = True
    persistent: bool = False


API_KEY_SCOPES = ("all", "inference", "management")


@dataclass(frozen=True)
class ApiKeyScope:
    """What a scoped API key may do: ``inference`` (model endpoints, model lists),
    ``management`` (unload, reload, logs, metrics, UI...) or ``all``; ``models`` limits the
    models it may use (``None``: all)."""

    scope: str = "all"
    models: frozenset[str] | None = None


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``groups`` always covers every model exactly once."""

    models: Mapping[str, ModelConfig]
    groups: Mapping[str, GroupConfig]
    path: str = "<memory>"
    health_check_timeout: float = 120.0
    log_level: str = "info"
    start_port: int = 5800
    preload: tuple[str, ...] = ()
    global_ttl: float = 0.0
    unload_timeout: float = 10.0
    include_aliases_in_list: bool = False
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    matrix: Matrix | None = None
    """The matrix router's compiled sets; ``None`` when groups decide what coexists."""
    capacities: Mapping[str, float] = field(default_factory=dict)
    """Declared resource capacities (``resources:``); empty means no budget applies."""
    send_loading_state: bool = False
    supervision: SupervisionConfig = field(default_factory=SupervisionConfig)
    """The global ``supervision`` block (each model's own, merged, is on ``ModelConfig``)."""
    api_keys: tuple[str, ...] = ()
    api_key_scopes: Mapping[str, ApiKeyScope] = field(default_factory=dict)
    """Keys given as mappings: what each may do (plain string keys may do everything)."""
    peers: Mapping[str, PeerConfig] = field(default_factory=dict)
    max_request_size: int = 100 * 1024 * 1024
    """Largest request body accepted, in bytes; larger ones get 413."""
    selectors: Mapping[str, SelectorConfig] = field(default_factory=dict)
    profiles: Mapping[str, ProfileConfig] = field(default_factory=dict)
    log_to_stdout: str = "both"
    """``proxy``, ``upstream``, ``both`` or ``none``: what reaches the process log and /logs."""
    log_time_format: str = ""
    """A llama-swap (Go) time layout name for the lines of /logs; ``""`` means no time."""
    metrics_max_in_memory: int = 1000
    """Row cap of the activity store when it is in memory."""
    capture_buffer_bytes: int = 5 * 1024 * 1024
    """Byte budget for captured request/response bodies (``captureBuffer`` MiB); 0 is off."""
    store_path: str | None = None
    """SQLite file for the activity history (``store.path``); ``None`` keeps it in memory."""
    store_max_rows: int = 100_000
    """Row cap of the activity store when it is a file (``store.maxRows``)."""
    warnings: tuple[str, ...] = ()
    """Non-fatal findings (unknown keys, unsupported features), one line each."""

    def resolve(self, name: str) -> str | None:
        """The model ID a request name means: an ID wins over an alias; ``None`` if unknown."""
        if name in self.models:
            return name
        for model in self.models.values():
            if name in model.aliases:
                return model.id
        return None

    def resolve_peer(self, name: str) -> tuple[str, str] | None:
        """``(peer id, model)`` for ``<peer>/<model>`` or a bare name exactly one peer lists.

        Call it only after ``resolve``: local models and aliases win over peer models.
        """
        peer_id, slash, model = name.partition("/")
        if slash and peer_id in self.peers and model in self.peers[peer_id].models:
            return peer_id, model
        owners = [peer.id for peer in self.peers.values() if name in peer.models]
        return (owners[0], name) if len(owners) == 1 else None

    def group_of(self, model_id: str) -> GroupConfig:
        for group in self.groups.values():
            if model_id in group.members:
                return group
        raise KeyError(model_id)


# --- what llama-swap knows, and what llamaswap supports ------------------------------------

_NOT_SUPPORTED = "not supported yet by llamaswap; ignored"
_TOP_KEYS = frozenset({
    "healthCheckTimeout", "logLevel", "startPort", "macros", "models", "groups", "routing",
    "hooks", "globalTTL", "unloadTimeout", "includeAliasesInList", "matrix", "resources",
    "sendLoadingState", "supervision",
    "apiKeys", "peers", "maxRequestSize", "profiles", "selectors",
    "logToStdout", "logTimeFormat", "metricsMaxInMemory", "captureBuffer", "store",
})
_TOP_UNSUPPORTED = {
    "ui": _NOT_SUPPORTED,
    "performance": _NOT_SUPPORTED,
    "upstream": _NOT_SUPPORTED,
    "logRequests": "deprecated in llama-swap; ignored",
}
_MODEL_KEYS = frozenset({
    "cmd", "cmdStop", "proxy", "aliases", "env", "checkEndpoint", "ttl", "unloadTimeout",
    "unlisted", "useModelName", "concurrencyLimit", "name", "description", "metadata", "macros",
    "resources", "maxQueue", "filters", "upstreamHeaders", "sendLoadingState",
    "supervision",
})
_FILTER_KEYS = frozenset({"stripParams", "strip_params", "setParams", "setParamsByID"})
_PEER_KEYS = frozenset({"proxy", "apiKey", "models", "filters", "timeouts", "caCert"})
_PEER_TIMEOUT_KEYS = frozenset({"connect", "responseHeader"})
_SELECTOR_KEYS = frozenset({"strategy", "targets", "settings", "name", "description",
                            "unlisted", "metadata"})
_PEER_TIMEOUT_IGNORED = {k: _NOT_SUPPORTED for k in
                         ("keepalive", "tlsHandshake", "expectContinue", "idleConn")}
_MODEL_UNSUPPORTED = {
    "capabilities": _NOT_SUPPORTED,
    "timeouts": _NOT_SUPPORTED,
    "compat": _NOT_SUPPORTED,
    "healthCheckTimeout": _NOT_SUPPORTED + " (llama-swap overwrites it with the global "
                          "healthCheckTimeout too)",
}
_GROUP_KEYS = frozenset({"swap", "exclusive", "persistent", "members"})
_NO_UNSUPPORTED: Mapping[str, str] = {}

_LOG_LEVELS = ("debug", "info", "warn", "error")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MIN_HEALTH_CHECK_TIMEOUT = 15.0
_DEFAULT_UNLOAD_TIMEOUT = 10.0
_DEFAULT_CONCURRENCY = 10
_MAX_EXPANDED_NODES = 100_000


# --- YAML with yaml.v3's scalar rules ------------------------------------------------------

_NUMBER_TAG = "tag:llamaswap:number"
_NUMBERISH_RE = re.compile(
    r"^[-+]?(?:[0-9]|\.[0-9])[0-9a-zA-Z_.+-]*$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$")
_V3_FLOAT_RE = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_SPECIAL_FLOATS = {
    **{s: math.inf for s in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")},
    **{s: -math.inf for s in ("-.inf", "-.Inf", "-.INF")},
    **{s: math.nan for s in (".nan", ".NaN", ".NAN")},
}
_V3_BOOL_STRINGS = {
    **{s: True for s in ("y", "Y", "yes", "Yes", "YES", "on", "On", "ON")},
    **{s: False for s in ("n", "N", "no", "No", "NO", "off", "Off", "OFF")},
}


def _go_int(text: str) -> int | None:
    """Go's ``strconv.ParseInt(text, 0, 64)``: prefixes ``0x``/``0o``/``0b``, and ``0`` is octal."""
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
        return sign * int(digits, base)
    except ValueError:
        return None


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
        if total > _MAX_EXPANDED_NODES:
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


def _load_yaml(text: str) -> Any:
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


def _yaml_problem(error: yaml.YAMLError, text: str) -> str:
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


# --- problem collection and typed reading --------------------------------------------------


def _describe(value: object) -> str:
    """How a wrong value is quoted back to the user."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "null" if value is None else go_format(value)


class _Problems:
    """Collects ``<file>: <key.path>: <message>`` lines and reads typed values with defaults.

    Every reader reports a wrong type and returns the default, so decoding continues and
    all problems end up in one ``ConfigError``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def _line(self, key: str, message: str) -> str:
        return f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}"

    def error(self, key: str, message: str) -> None:
        self.errors.append(self._line(key, message))

    def warn(self, key: str, message: str) -> None:
        self.warnings.append(self._line(key, message))

    def fail(self) -> ConfigError:
        return ConfigError(self.errors, self.warnings)

    def mapping(self, value: object, key: str) -> dict[str, Any] | None:
        """``value`` if it is a mapping; ``None`` (reported unless null) otherwise."""
        if isinstance(value, dict):
            return value
        if value is not None:
            self.error(key, f"must be a mapping, got {_describe(value)}")
        return None

    def integer(self, d: Mapping[str, Any], key: str, base: str, default: int) -> int:
        value = d.get(key)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        self.error(join_path(base, key), f"must be an integer, got {_describe(value)}")
        return default

    def seconds(self, d: Mapping[str, Any], key: str, base: str, default: float) -> float:
        value = d.get(key)
        if value is None:
            return default
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        self.error(join_path(base, key), f"must be a number of seconds, got {_describe(value)}")
        return default

    def boolean(self, d: Mapping[str, Any], key: str, base: str, default: bool) -> bool:
        value = d.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value in _V3_BOOL_STRINGS:  # yaml.v3 accepts these too
            return _V3_BOOL_STRINGS[value]
        self.error(join_path(base, key), f"must be true or false, got {_describe(value)}")
        return default

    def string(self, d: Mapping[str, Any], key: str, base: str, default: str = "") -> str:
        value = d.get(key)
        if value is None:
            return default
        if isinstance(value, dict | list):
            self.error(join_path(base, key), f"must be a string, got {_describe(value)}")
            return default
        return go_format(value)  # yaml.v3 decodes any scalar into a string field

    def strings(self, d: Mapping[str, Any], key: str, base: str) -> list[str]:
        value = d.get(key)
        if value is None:
            return []
        path = join_path(base, key)
        if not isinstance(value, list):
            self.error(path, f"must be a list of strings, got {_describe(value)}")
            return []
        result: list[str] = []
        for index, item in enumerate(value):
            if item is None or isinstance(item, dict | list):
                self.error(join_path(path, index), f"must be a string, got {_describe(item)}")
            else:
                result.append(go_format(item))
        return result


def _is_set(value: object) -> bool:
    """Whether an ignored key carries anything (null, false and empty values change nothing)."""
    return not (value is None or value is False or value == "" or value == [] or value == {})


def _check_keys(
    p: _Problems, mapping: object, base: str, known: Collection[str],
    unsupported: Mapping[str, str] = _NO_UNSUPPORTED,
) -> None:
    """Warn about unknown keys (with a close match) and keys llamaswap cannot honour yet."""
    if not isinstance(mapping, dict):
        return
    candidates = {k.lower(): k for k in [*known, *unsupported]}
    for key, value in mapping.items():
        path = join_path(base, key)
        if key in known:
            continue
        if key in unsupported:
            if _is_set(value):
                p.warn(path, unsupported[key])
            continue
        close = difflib.get_close_matches(key.lower(), list(candidates), n=1, cutoff=0.6)
        hint = f" (did you mean '{candidates[close[0]]}'?)" if close else ""
        p.warn(path, f"unknown key, ignored{hint}")


def _check_all_keys(p: _Problems, tree: Mapping[str, Any]) -> None:
    """Every mapping llamaswap reads gets its keys checked (on the tree before macros)."""
    _check_keys(p, tree, "", _TOP_KEYS, _TOP_UNSUPPORTED)
    models = tree.get("models")
    if isinstance(models, dict):
        for model_id, model in models.items():
            _check_keys(p, model, f"models.{model_id}", _MODEL_KEYS, _MODEL_UNSUPPORTED)
            if isinstance(model, dict):
                _check_keys(p, model.get("filters"), f"models.{model_id}.filters",
                            _FILTER_KEYS)
    for selector_id, selector in (tree.get("selectors") or {}).items() if isinstance(
            tree.get("selectors"), dict) else ():
        _check_keys(p, selector, f"selectors.{selector_id}", _SELECTOR_KEYS)
    for name, profile in (tree.get("profiles") or {}).items() if isinstance(
            tree.get("profiles"), dict) else ():
        _check_keys(p, profile, f"profiles.{name}", {"description", "pins"})
    peers = tree.get("peers")
    if isinstance(peers, dict):
        for peer_id, peer in peers.items():
            _check_keys(p, peer, f"peers.{peer_id}", _PEER_KEYS)
            if isinstance(peer, dict):
                _check_keys(p, peer.get("filters"), f"peers.{peer_id}.filters",
                            _FILTER_KEYS - {"setParamsByID"})
                _check_keys(p, peer.get("timeouts"), f"peers.{peer_id}.timeouts",
                            _PEER_TIMEOUT_KEYS, _PEER_TIMEOUT_IGNORED)
    hooks = tree.get("hooks")
    _check_keys(p, hooks, "hooks", {"on_startup"})
    _check_keys(p, tree.get("store"), "store", {"path", "maxRows"})
    if isinstance(hooks, dict):
        _check_keys(p, hooks.get("on_startup"), "hooks.on_startup", {"preload"})
    groups: list[tuple[str, object]] = [("groups", tree.get("groups"))]
    routing = tree.get("routing")
    _check_keys(p, routing, "routing", {"router", "scheduler"})
    if isinstance(routing, dict):
        router = routing.get("router")
        _check_keys(p, router, "routing.router", {"use", "settings"})
        if isinstance(router, dict):
            settings = router.get("settings")
            _check_keys(p, settings, "routing.router.settings", {"groups", "matrix"})
            if isinstance(settings, dict):
                groups.append(("routing.router.settings.groups", settings.get("groups")))
    for base, mapping in groups:
        if isinstance(mapping, dict):
            for group_id, group in mapping.items():
                _check_keys(p, group, join_path(base, group_id), _GROUP_KEYS)


# --- decoding ------------------------------------------------------------------------------


def _proxy_problem(url: str) -> str | None:
    """Why ``url`` cannot be a proxy base URL, or ``None``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        return f"invalid proxy URL {url!r}: {e}"
    if parts.scheme not in ("http", "https"):
        return f"invalid proxy URL {url!r}: the scheme must be http or https"
    if not parts.hostname:
        return f"invalid proxy URL {url!r}: it has no host"
    return None


_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def _filters(p: _Problems, raw: object, base: str, model_id: str | None,
             port: int | None) -> Filters:
    """``filters:`` of a model (``model_id`` set) or a peer (no ``setParamsByID``)."""
    d = p.mapping(raw, base) or {}
    strip = p.string(d, "stripParams", base) or p.string(d, "strip_params", base)
    set_params = p.mapping(d.get("setParams"), f"{base}.setParams") or {}
    if "model" in set_params:
        p.warn(f"{base}.setParams.model", "model is protected and cannot be set; ignored")
    by_id: dict[str, dict[str, Any]] = {}
    if model_id is not None:
        for key, params in (p.mapping(d.get("setParamsByID"), f"{base}.setParamsByID")
                            or {}).items():
            name = key.replace("${MODEL_ID}", model_id)
            if port is not None:
                name = name.replace("${PORT}", str(port))
            if name in by_id:
                p.error(f"{base}.setParamsByID.{key}",
                        f"key '{name}' appears twice after macro expansion")
            by_id[name] = p.mapping(params, f"{base}.setParamsByID.{key}") or {}
    return Filters(strip_params=parse_strip_params(strip), set_params=set_params,
                   set_params_by_id=by_id)


def _register_param_aliases(p: _Problems, models: dict[str, ModelConfig],
                            owner: dict[str, str]) -> None:
    """Each ``setParamsByID`` key that is not the model's own name becomes an alias."""
    for model_id, model in list(models.items()):
        added: list[str] = []
        for name in model.filters.set_params_by_id:
            path = f"models.{model_id}.filters.setParamsByID.{name}"
            if name == model_id or name in model.aliases:
                continue
            if name in models:
                p.error(path, f"model {model_id} filters.setParamsByID: key '{name}' conflicts "
                        "with an existing model ID")
            elif name in owner:
                p.error(path, f"duplicate alias '{name}' in model {model_id} "
                        f"filters.setParamsByID, already used by model {owner[name]}")
            else:
                owner[name] = model_id
                added.append(name)
        if added:
            models[model_id] = replace(model, aliases=(*model.aliases, *added))


def _header_pairs(p: _Problems, raw: object, base: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for name, value in (p.mapping(raw, base) or {}).items():
        text = p.string({name: value}, name, base)
        if not _HEADER_NAME_RE.match(name):
            p.error(join_path(base, name), f"invalid HTTP header name {name!r}")
        elif any(c in text for c in "\r\n\x00"):
            p.error(join_path(base, name), "header value must not contain CR, LF or NUL")
        else:
            pairs.append((name, text))
    return tuple(pairs)


def _api_keys(p: _Problems, tree: Mapping[str, Any],
              model_ids: Mapping[str, str]) -> tuple[tuple[str, ...], dict[str, ApiKeyScope]]:
    """``apiKeys``; llama-swap's messages, but the keys themselves are never quoted back.

    An entry is a key (allowed everything, as in llama-swap) or a scoped key:
    ``{key: K, scope: inference | management | all, models: [ids or aliases]}``.
    ``model_ids`` maps every id and alias to its model id.
    """
    raw = tree.get("apiKeys")
    if raw is None:
        return (), {}
    if not isinstance(raw, list):
        p.error("apiKeys", "must be a list of keys")
        return (), {}
    keys: list[str] = []
    scopes: dict[str, ApiKeyScope] = {}
    for index, entry in enumerate(raw):
        base = f"apiKeys[{index}]"
        scope = None
        if isinstance(entry, dict):
            unknown = set(entry) - {"key", "scope", "models"}
            if unknown:
                p.error(f"{base}.{sorted(unknown)[0]}", "unknown key (known: key, models, scope)")
            kind = str(entry.get("scope", "all"))
            if kind not in API_KEY_SCOPES:
                p.error(f"{base}.scope", f'unknown scope "{kind}" (valid: '
                        f'{", ".join(API_KEY_SCOPES)})')
            models: list[str] = []
            for name in p.strings(entry, "models", base):
                if name not in model_ids:
                    p.error(f"{base}.models", f'unknown model "{name}"')
                else:
                    models.append(model_ids[name])
            scope = ApiKeyScope(kind, frozenset(models) if models else None)
            entry = entry.get("key")
        if entry is None or isinstance(entry, dict | list):
            p.error(base, "must be a key or a mapping with a key")
            continue
        key = go_format(entry)
        if not key.strip():
            p.error(base, "empty api key found in apiKeys")
        elif any(c.isspace() for c in key):
            p.error(base, "api key cannot contain spaces")
        elif key not in keys:
            keys.append(key)
            if scope is not None:
                scopes[key] = scope
    return tuple(keys), scopes


def _byte_size(p: _Problems, tree: Mapping[str, Any], key: str, default: int) -> int:
    """A size in bytes: ``1048576``, ``"100MB"``, ``"1.5GiB"`` (K/M/G/T, 1000 or 1024)."""
    value = tree.get(key)
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE_RE.match(value) if isinstance(value, str) else None
    if match is None or float(match.group(1)) <= 0:
        p.error(key, f"must be a positive size like 104857600, '100MB' or '1GiB', got "
                f"{_describe(value)}")
        return default
    power = "kmgt".find(match.group(2).lower()) + 1
    return int(float(match.group(1)) * (1024 if match.group(3) else 1000) ** power)


def _peers(p: _Problems, raw: object, models: Mapping[str, ModelConfig],
           aliases: Mapping[str, str]) -> dict[str, PeerConfig]:
    """``peers:``; a ``<peer>/<model>`` name must not collide with a local model or alias."""
    peers: dict[str, PeerConfig] = {}
    for peer_id, peer in (p.mapping(raw, "peers") or {}).items():
        base = f"peers.{peer_id}"
        d = p.mapping(peer, base)
        if d is None:
            continue
        proxy = p.string(d, "proxy", base).strip()
        if not proxy:
            p.error(f"{base}.proxy", "proxy is required")
        else:
            problem = _proxy_problem(proxy)
            if problem:
                p.error(f"{base}.proxy", f"invalid peer proxy URL ({problem})")
        names = [m.strip() for m in p.strings(d, "models", base) if m.strip()]
        if not names:
            p.error(f"{base}.models", "peer models can not be empty")
        for index, name in enumerate(names):
            fqn = f"{peer_id}/{name}"
            if fqn in models or fqn in aliases:
                p.error(f"{base}.models[{index}]", f'peer model "{fqn}" conflicts with a '
                        "model ID or alias")
        ca_cert = p.string(d, "caCert", base)
        if ca_cert and not os.access(ca_cert, os.R_OK):
            p.error(f"{base}.caCert", f"cannot read the CA certificate file {ca_cert!r}")
        timeouts = p.mapping(d.get("timeouts"), f"{base}.timeouts") or {}
        peers[peer_id] = PeerConfig(
            id=peer_id, proxy=proxy, models=tuple(dict.fromkeys(names)),
            api_key=p.string(d, "apiKey", base),
            filters=_filters(p, d.get("filters"), f"{base}.filters", None, None),
            ca_cert=ca_cert,
            connect_timeout=p.seconds(timeouts, "connect", f"{base}.timeouts", 30.0),
            response_header_timeout=p.seconds(timeouts, "responseHeader", f"{base}.timeouts",
                                              60.0))
    return peers


def _selectors_and_profiles(
    p: _Problems, tree: Mapping[str, Any], models: Mapping[str, ModelConfig],
    aliases: Mapping[str, str], peers: Mapping[str, PeerConfig],
    groups: Mapping[str, GroupConfig], uses_matrix: bool,
) -> tuple[dict[str, SelectorConfig], dict[str, ProfileConfig]]:
    """``selectors`` and ``profiles`` (§2.9), checked against models, aliases and peers."""
    probe = Config(models=models, groups=groups, peers=peers)

    def resolve(name: str) -> str | None:
        local = probe.resolve(name)
        remote = None if local else probe.resolve_peer(name)
        return local or ("/".join(remote) if remote else None)

    def taken(name: str) -> bool:
        return name in models or name in aliases or probe.resolve_peer(name) is not None

    def can_coexist(local: list[str]) -> bool:
        if uses_matrix:
            return True  # the matrix decides at run time; not checked here
        group = probe.group_of(local[0])
        return not group.swap and all(m in group.members for m in local)

    selectors = parse_selectors(p, tree.get("selectors"), resolve, lambda m: m in models,
                                taken, can_coexist)
    return selectors, parse_profiles(p, tree.get("profiles"), resolve, selectors)


def _env_pairs(p: _Problems, entries: list[str], base: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for index, entry in enumerate(entries):
        path = join_path(join_path(base, "env"), index)
        name, eq, value = entry.partition("=")
        if not eq:
            p.error(path, f"env entry {entry!r} must look like NAME=value")
        elif not _ENV_NAME_RE.match(name):
            p.error(path, f"invalid environment variable name {name!r}")
        elif "\x00" in value:
            p.error(path, f"environment variable {name!r} contains a NUL byte")
        else:
            pairs.append((name, value))
    return tuple(pairs)


@dataclass
class _Globals:
    """Top-level values a model's defaults come from."""

    global_ttl: float
    unload_timeout: float


def _model(
    p: _Problems, model_id: str, model: dict[str, Any], g: _Globals, exp: Expansion
) -> ModelConfig:
    """Decode one expanded ``models.<id>`` mapping, reporting problems under its path."""
    base = f"models.{model_id}"
    cmd: tuple[str, ...] = ()
    raw_cmd = model.get("cmd")
    if raw_cmd is None:
        p.error(f"{base}.cmd", "cmd is required")
    else:
        text = p.string(model, "cmd", base)
        if not isinstance(raw_cmd, dict | list):
            try:
                args, open_quote = split_command_checked(text)
                cmd = tuple(args)
                if open_quote:
                    p.warn(f"{base}.cmd", "unterminated quote: the rest of the command is one "
                                          "argument (llama-swap does the same)")
            except ValueError as e:
                p.error(f"{base}.cmd", str(e))
    cmd_stop = p.string(model, "cmdStop", base)
    if not cmd_stop.strip():
        cmd_stop = ""

    proxy = p.string(model, "proxy", base)
    if model_id not in exp.port_reported and "${" not in proxy:
        problem = _proxy_problem(proxy)
        if problem:
            p.error(f"{base}.proxy", problem)

    check: str | None = p.string(model, "checkEndpoint", base, "/health").strip()
    if check == "none":
        check = None
    elif check is not None and not check.startswith("/"):
        check = "/" + check

    ttl = p.seconds(model, "ttl", base, -1.0)
    if ttl == -1:
        ttl = g.global_ttl
    if ttl < 0:
        p.error(f"{base}.ttl", f"invalid TTL value {go_format(model.get('ttl'))}")
    unload_timeout = p.seconds(model, "unloadTimeout", base, 0.0)
    if unload_timeout < 0:
        p.error(f"{base}.unloadTimeout",
                f"invalid unloadTimeout value {go_format(model.get('unloadTimeout'))}")
    elif unload_timeout == 0:
        unload_timeout = g.unload_timeout
    concurrency = p.integer(model, "concurrencyLimit", base, 0)
    if concurrency < 0:
        p.error(f"{base}.concurrencyLimit", f"invalid concurrencyLimit value {concurrency}")
    elif concurrency == 0:
        concurrency = _DEFAULT_CONCURRENCY
    metadata = p.mapping(model.get("metadata"), f"{base}.metadata") or {}
    max_queue = p.integer(model, "maxQueue", base, 0)
    if max_queue < 0:
        p.error(f"{base}.maxQueue", f"must be >= 0, got {max_queue}")
        max_queue = 0

    return ModelConfig(
        id=model_id,
        cmd=cmd,
        proxy=proxy,
        cmd_stop=cmd_stop,
        check_endpoint=check,
        aliases=tuple(p.strings(model, "aliases", base)),
        env=_env_pairs(p, p.strings(model, "env", base), base),
        ttl=ttl,
        unload_timeout=unload_timeout,
        unlisted=p.boolean(model, "unlisted", base, False),
        use_model_name=p.string(model, "useModelName", base),
        concurrency_limit=concurrency,
        name=p.string(model, "name", base),
        description=p.string(model, "description", base),
        metadata=metadata,
        port=exp.ports.get(model_id),
        max_queue=max_queue,
        send_loading_state=(None if model.get("sendLoadingState") is None
                            else p.boolean(model, "sendLoadingState", base, False)),
        filters=_filters(p, model.get("filters"), f"{base}.filters", model_id,
                         exp.ports.get(model_id)),
        upstream_headers=_header_pairs(p, model.get("upstreamHeaders"),
                                       f"{base}.upstreamHeaders"),
    )


def _check_aliases(p: _Problems, models: dict[str, ModelConfig]) -> dict[str, str]:
    """Aliases must be unique and must not shadow another model; returns alias -> model id."""
    owner: dict[str, str] = {}
    for model_id, model in models.items():
        kept: list[str] = []
        for index, alias in enumerate(model.aliases):
            path = f"models.{model_id}.aliases[{index}]"
            if alias == model_id:
                p.warn(path, f"alias {alias} is the model's own id; ignored")
            elif alias in models:
                p.error(path, f"alias {alias} conflicts with an existing model ID")
            elif alias in owner:
                p.error(path, f"duplicate alias {alias} found in model: {model_id}")
            else:
                owner[alias] = model_id
                kept.append(alias)
        if len(kept) != len(model.aliases):
            models[model_id] = replace(model, aliases=tuple(kept))
    return owner


def _router_source(p: _Problems, tree: Mapping[str, Any]) -> tuple[str, object, str, object]:
    """Where the groups and the matrix come from (top-level or ``routing.router.settings``).

    Returns ``(groups path, groups, matrix path, matrix)``; the matrix is ``None`` unless the
    matrix router is in use. Mirrors llama-swap's routing normalisation and its messages.
    """
    top_groups, top_matrix = tree.get("groups"), tree.get("matrix")
    routing = p.mapping(tree.get("routing"), "routing") or {}
    router = p.mapping(routing.get("router"), "routing.router") or {}
    settings = p.mapping(router.get("settings"), "routing.router.settings") or {}
    use = p.string(router, "use", "routing.router")
    settings_groups, settings_matrix = settings.get("groups"), settings.get("matrix")
    has_top = top_matrix is not None or _is_set(top_groups)
    has_routing = use != "" or settings_matrix is not None or _is_set(settings_groups)
    if has_top and has_routing:
        p.error("routing", "config uses both the legacy top-level 'matrix'/'groups' keys and "
                "the new 'routing.router' block; please migrate the top-level keys into "
                "'routing.router' and remove them")
        return "groups", top_groups, "matrix", None
    if has_top:
        if top_matrix is not None and _is_set(top_groups):
            p.error("matrix", "config cannot use both 'groups' and 'matrix'")
        return "groups", top_groups, "matrix", top_matrix
    if use == "matrix":
        if settings_matrix is None:
            p.error("routing.router.use",
                    "routing.router.use is 'matrix' but routing.router.settings.matrix is not set")
        return ("routing.router.settings.groups", settings_groups,
                "routing.router.settings.matrix", settings_matrix)
    if use not in ("", "group"):
        p.error("routing.router.use", f'unknown router "{use}" (valid: group, matrix)')
    return "routing.router.settings.groups", settings_groups, "", None


def _groups(
    p: _Problems, base: str, raw: object, model_ids: Collection[str], aliases: Mapping[str, str]
) -> dict[str, GroupConfig]:
    """The configured groups plus ``(default)`` holding every model left out (if any)."""
    groups: dict[str, GroupConfig] = {}
    member_of: dict[str, str] = {}
    for group_id, group in (p.mapping(raw, base) or {}).items():
        path = join_path(base, group_id)
        if group_id == DEFAULT_GROUP:
            p.warn(path, f"the group id {DEFAULT_GROUP} is reserved for models without a group; "
                   "this group is ignored (llama-swap replaces it too)")
            continue
        if group is None:
            group = {}
        elif not isinstance(group, dict):
            p.error(path, f"must be a mapping, got {_describe(group)}")
            continue
        members: list[str] = []
        for index, member in enumerate(p.strings(group, "members", path)):
            if member in members:
                p.error(f"{path}.members",
                        f"duplicate model member {member} found in group: {group_id}")
            elif member not in model_ids:
                hint = (f" ({member} is an alias of {aliases[member]}; groups list model ids)"
                        if member in aliases else "")
                p.error(f"{path}.members[{index}]", f'no model config for "{member}"{hint}')
            elif member in member_of:
                p.error(f"{path}.members", f"model member {member} is used in multiple groups: "
                        f"{member_of[member]} and {group_id}")
            else:
                member_of[member] = group_id
                members.append(member)
        groups[group_id] = GroupConfig(
            id=group_id,
            members=tuple(members),
            swap=p.boolean(group, "swap", path, True),
            exclusive=p.boolean(group, "exclusive", path, True),
            persistent=p.boolean(group, "persistent", path, False),
        )
    ungrouped = sorted(m for m in model_ids if m not in member_of)
    if ungrouped:
        groups[DEFAULT_GROUP] = GroupConfig(id=DEFAULT_GROUP, members=tuple(ungrouped))
    return groups


def _preload(
    p: _Problems, tree: Mapping[str, Any], models: Collection[str], aliases: Mapping[str, str]
) -> tuple[str, ...]:
    """``hooks.on_startup.preload``: trimmed, aliases resolved, unknown ids warned about."""
    hooks = p.mapping(tree.get("hooks"), "hooks") or {}
    on_startup = p.mapping(hooks.get("on_startup"), "hooks.on_startup") or {}
    result: list[str] = []
    for index, name in enumerate(p.strings(on_startup, "preload", "hooks.on_startup")):
        name = name.strip()
        if not name:
            continue
        model_id = name if name in models else aliases.get(name)
        if model_id is None:
            p.warn(f"hooks.on_startup.preload[{index}]",
                   f'unknown model "{name}"; it will not be preloaded')
        else:
            result.append(model_id)
    return tuple(result)


_LOG_TO_STDOUT = ("proxy", "upstream", "both", "none")
_LOG_TIME_FORMATS = ("ansic", "unixdate", "rubydate", "rfc822", "rfc822z", "rfc850", "rfc1123",
                     "rfc1123z", "rfc3339", "rfc3339nano", "kitchen", "stamp", "stampmilli",
                     "stampmicro", "stampnano")


def _observability(p: _Problems, tree: Mapping[str, Any]) -> dict[str, Any]:
    """Logging, activity store and capture settings (reference §2.2)."""
    log_to_stdout = p.string(tree, "logToStdout", "", "both").strip().lower()
    if log_to_stdout not in _LOG_TO_STDOUT:
        p.error("logToStdout", f"must be one of {', '.join(_LOG_TO_STDOUT)}, got "
                f"{_describe(tree.get('logToStdout'))}")
        log_to_stdout = "both"
    log_time_format = p.string(tree, "logTimeFormat", "", "").strip().lower()
    if log_time_format and log_time_format not in _LOG_TIME_FORMATS:
        p.warn("logTimeFormat", f"unknown time format {log_time_format!r} (valid: "
               f"{', '.join(_LOG_TIME_FORMATS)}); lines get no time")
        log_time_format = ""
    max_in_memory = p.integer(tree, "metricsMaxInMemory", "", 1000)
    if max_in_memory < 1:
        p.error("metricsMaxInMemory", f"must be at least 1, got {max_in_memory}")
    capture = p.seconds(tree, "captureBuffer", "", 5.0)
    if capture < 0:
        p.error("captureBuffer", f"must be a number of MiB >= 0, got {go_format(capture)}")
    store = p.mapping(tree.get("store"), "store") or {}
    store_path: str | None = None
    if "path" in store:
        store_path = p.string(store, "path", "store").strip()
        if not store_path:
            p.error("store.path", "must not be empty (leave store out to keep activity in "
                    "memory)")
        elif os.path.isdir(store_path):
            p.error("store.path", f"{store_path} is a directory; give a file name")
        elif not os.access(os.path.dirname(os.path.abspath(store_path)) or ".", os.W_OK):
            p.error("store.path", f"cannot write in the directory of {store_path}")
    max_rows = p.integer(store, "maxRows", "store", 100_000)
    if max_rows < 1:
        p.error("store.maxRows", f"must be at least 1, got {max_rows}")
    return {"log_to_stdout": log_to_stdout, "log_time_format": log_time_format,
            "metrics_max_in_memory": max(max_in_memory, 1),
            "capture_buffer_bytes": int(max(capture, 0.0) * 1024 * 1024),
            "store_path": store_path or None, "store_max_rows": max(max_rows, 1)}


def _decode(p: _Problems, exp: Expansion) -> Config:
    """Typed, defaulted, validated ``Config`` from the macro-expanded tree."""
    tree = exp.tree
    health = max(p.seconds(tree, "healthCheckTimeout", "", 120.0), _MIN_HEALTH_CHECK_TIMEOUT)
    log_level = p.string(tree, "logLevel", "", "info").strip().lower()
    if log_level not in _LOG_LEVELS:
        p.warn("logLevel", f"unknown log level {tree.get('logLevel')!r} (valid: "
               f"{', '.join(_LOG_LEVELS)}); using info")
        log_level = "info"
    start_port = p.integer(tree, "startPort", "", 5800)
    if start_port < 1:
        p.error("startPort", "startPort must be greater than 1")
    elif start_port > 65535:
        p.error("startPort", "startPort must be at most 65535")
    global_ttl = p.seconds(tree, "globalTTL", "", 0.0)
    if global_ttl < 0:
        p.error("globalTTL", "globalTTL must be >= 0")
    unload_timeout = p.seconds(tree, "unloadTimeout", "", _DEFAULT_UNLOAD_TIMEOUT)
    if unload_timeout < 0:
        p.error("unloadTimeout", "unloadTimeout must be >= 0")
    elif unload_timeout == 0:
        unload_timeout = _DEFAULT_UNLOAD_TIMEOUT

    raw_models = tree.get("models")
    if raw_models is not None and not isinstance(raw_models, dict):
        p.error("models", f"must be a mapping of model id to settings, got {_describe(raw_models)}")
        raw_models = {}
    elif not raw_models:
        p.warn("models", "no models are defined")
        raw_models = {}
    g = _Globals(global_ttl=max(global_ttl, 0.0), unload_timeout=max(unload_timeout, 0.0))
    models: dict[str, ModelConfig] = {}
    for model_id, model in raw_models.items():
        if model is None:
            model = {}
        if not isinstance(model, dict):
            p.error(f"models.{model_id}", f"must be a mapping of model settings, got "
                    f"{_describe(model)}")
            continue
        models[model_id] = _model(p, model_id, model, g, exp)
    aliases = _check_aliases(p, models)
    _register_param_aliases(p, models, aliases)

    group_base, raw_groups, matrix_base, raw_matrix = _router_source(p, tree)
    groups = _groups(p, group_base, raw_groups, list(raw_models), aliases)
    matrix = parse_matrix(p, raw_matrix, matrix_base, list(models)) if raw_matrix else None
    routing = p.mapping(tree.get("routing"), "routing") or {}
    scheduler = parse_scheduler(p, routing.get("scheduler"), list(models))
    capacities, needs = parse_resources(p, tree, raw_models, list(models))
    supervision = parse_supervision(p, tree.get("supervision"), "supervision",
                                    SupervisionConfig())
    models = {m: replace(c, resources=needs.get(m, {}), supervision=parse_supervision(
        p, raw_models[m].get("supervision"), f"models.{m}.supervision", supervision))
        for m, c in models.items()}
    observability = _observability(p, tree)
    peers = _peers(p, tree.get("peers"), models, aliases)
    selectors, profiles = _selectors_and_profiles(p, tree, models, aliases, peers, groups,
                                                  matrix is not None)
    api_keys, api_key_scopes = _api_keys(p, tree, {**aliases, **{m: m for m in models}})
    return Config(
        **observability,
        models=models,
        groups=groups,
        matrix=matrix,
        scheduler=scheduler,
        capacities=capacities,
        health_check_timeout=health,
        log_level=log_level,
        start_port=start_port,
        preload=_preload(p, tree, raw_models, aliases),
        global_ttl=global_ttl,
        unload_timeout=unload_timeout,
        include_aliases_in_list=p.boolean(tree, "includeAliasesInList", "", False),
        send_loading_state=p.boolean(tree, "sendLoadingState", "", False),
        supervision=supervision,
        api_keys=api_keys,
        api_key_scopes=api_key_scopes,
        peers=peers,
        selectors=selectors,
        profiles=profiles,
        max_request_size=_byte_size(p, tree, "maxRequestSize", 100 * 1024 * 1024),
    )


# --- entry points --------------------------------------------------------------------------


def parse_config(
    text: str, path: str = "<string>", environ: Mapping[str, str] | None = None
) -> Config:
    """Build a ``Config`` from YAML text, or raise ``ConfigError`` listing every problem.

    ``path`` only labels the messages. ``environ`` feeds ``${env.NAME}`` (default
    ``os.environ``); passing it keeps tests independent of the real environment.
    """
    environ = os.environ if environ is None else environ
    p = _Problems(path)

    failed_env: set[str] = set()
    if "${env." in text:
        try:
            refs = env_refs_in_tree(_load_yaml(text))
        except (yaml.YAMLError, RecursionError):
            refs = env_refs_in_text(text)  # like llama-swap: fall back to the raw text
        text, env_problems, failed_env = substitute_env(text, refs, environ)
        for where, message in env_problems:
            p.error(where, message)

    try:
        tree = _load_yaml(text)
    except yaml.YAMLError as e:
        p.error("", _yaml_problem(e, text))
        raise p.fail() from None
    except RecursionError:
        p.error("", "the YAML document is nested too deeply")
        raise p.fail() from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        p.error("", f"the top level must be a mapping of settings, got {_describe(tree)}")
        raise p.fail()

    _check_all_keys(p, tree)
    expansion = expand_config_macros(tree, p.error)
    check_leftovers(expansion, _TOP_KEYS, _MODEL_KEYS, p.error, failed_env)
    config = _decode(p, expansion)
    if p.errors:
        raise p.fail()
    return replace(config, path=path, warnings=tuple(p.warnings))


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and parse the config file at ``path`` (see ``parse_config``)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the config file: {e.strerror or e}"]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: the config file is not valid UTF-8 ({e})"]) from None
    return parse_config(text, path, environ)
