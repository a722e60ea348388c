# -*- test-case-name: tests.test_config -*-
"""Typed decoding of the macro-expanded tree into a ``Config``, with llama-swap's defaults."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from llamaswap.config.cmdline import split_command_checked
from llamaswap.config.macros import Expansion, go_format, join_path
from llamaswap.config.model import (
    DEFAULT_IGNORE_PATHS,
    PEER_TIMEOUTS,
    Capabilities,
    Config,
    ModelConfig,
    PeerConfig,
    PerformanceConfig,
    Timeouts,
    UIActivityConfig,
    UIConfig,
)
from llamaswap.config.problems import Problems
from llamaswap.config.semantic import (
    check_aliases,
    read_api_keys,
    read_groups,
    read_preload,
    register_param_aliases,
    router_source,
    selectors_and_profiles,
)
from llamaswap.config.structure import describe
from llamaswap.filters import Filters, parse_strip_params
from llamaswap.routing import parse_matrix, parse_resources, parse_scheduler
from llamaswap.slotcache.config import parse_model_slot_cache, parse_slot_cache_root
from llamaswap.supervision import SupervisionConfig, parse_supervision

__all__ = ["decode_config"]


_LOG_LEVELS = ("debug", "info", "warn", "error")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MIN_HEALTH_CHECK_TIMEOUT = 15.0
_DEFAULT_UNLOAD_TIMEOUT = 10.0
_DEFAULT_CONCURRENCY = 10
COMFYUI_MODEL_ID = "comfyui_auto"
"""llama-swap's ComfyUI model: many concurrent requests, websockets never start it."""
_COMFYUI_CONCURRENCY = 50


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
_MAX_BYTE_SIZE = 1 << 40
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def _filters(p: Problems, raw: object, base: str, model_id: str | None,
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


def _header_pairs(p: Problems, raw: object, base: str) -> tuple[tuple[str, str], ...]:
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


def _byte_size(p: Problems, tree: Mapping[str, Any], key: str, default: int) -> int:
    """A size in bytes: ``1048576``, ``"100MB"``, ``"1.5GiB"`` (K/M/G/T, 1000 or 1024), <= 1TiB."""
    value = tree.get(key)
    if value is None:
        return default
    size: float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE_RE.match(value)) is not None:
        power = "kmgt".find(match.group(2).lower()) + 1
        size = float(match.group(1)) * (1024 if match.group(3) else 1000) ** power
    if size is None or size <= 0:
        p.error(key, f"must be a positive size like 104857600, '100MB' or '1GiB', got "
                f"{describe(value)}")
        return default
    if size > _MAX_BYTE_SIZE:  # also catches a float that overflowed to infinity
        p.error(key, f"must be at most 1TiB ({_MAX_BYTE_SIZE} bytes), got {describe(value)}")
        return default
    return int(size)


def _peers(p: Problems, raw: object, models: Mapping[str, ModelConfig],
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
        peers[peer_id] = PeerConfig(
            id=peer_id, proxy=proxy, models=tuple(dict.fromkeys(names)),
            api_key=p.string(d, "apiKey", base),
            filters=_filters(p, d.get("filters"), f"{base}.filters", None, None),
            ca_cert=ca_cert,
            timeouts=_timeouts(p, d.get("timeouts"), f"{base}.timeouts", PEER_TIMEOUTS))
    _check_peer_namespace(p, peers)
    return peers


def _check_peer_namespace(p: Problems, peers: Mapping[str, PeerConfig]) -> None:
    """Two peers whose names combine into one ``<peer>/<model>`` (peer ``a`` with model
    ``b/c`` and peer ``a/b`` with model ``c``): which is meant cannot be told, so refused."""
    seen: dict[str, tuple[str, str]] = {}
    for peer_id in sorted(peers):
        for model in peers[peer_id].models:
            fqn = f"{peer_id}/{model}"
            if fqn in seen:
                other_peer, other_model = seen[fqn]
                p.error(f"peers.{peer_id}.models",
                        f'peer model name "{fqn}" is ambiguous between peers.{other_peer} '
                        f'model "{other_model}" and peers.{peer_id} model "{model}"')
            else:
                seen[fqn] = (peer_id, model)


def _env_pairs(p: Problems, entries: list[str], base: str) -> tuple[tuple[str, str], ...]:
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
    p: Problems, model_id: str, model: dict[str, Any], g: _Globals, exp: Expansion
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

    given = p.string(model, "checkEndpoint", base, "/health").strip()
    check: str | None = given
    if given == "none":
        check = None
    elif given.startswith(("http://", "https://")):
        problem = _proxy_problem(given) if "${" not in given else None
        if problem:
            p.error(f"{base}.checkEndpoint", problem.replace("proxy URL", "URL"))
    elif not given.startswith("/"):
        check = "/" + given

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
    if model_id == COMFYUI_MODEL_ID:
        concurrency = max(concurrency, _COMFYUI_CONCURRENCY)
    compat = p.mapping(model.get("compat"), f"{base}.compat") or {}
    ignore_websockets = (model_id == COMFYUI_MODEL_ID
                         or p.boolean(compat, "ignoreWebsockets", f"{base}.compat", False))
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
        slot_cache=parse_model_slot_cache(model.get("slotCache"), f"{base}.slotCache", p.error),
        timeouts=_timeouts(p, model.get("timeouts"), f"{base}.timeouts", Timeouts()),
        capabilities=_capabilities(p, model.get("capabilities"), f"{base}.capabilities"),
        ignore_websockets=ignore_websockets,
    )


_TIMEOUT_KEYS = (("connect", "connect"), ("keepalive", "keepalive"),
                 ("responseHeader", "response_header"), ("tlsHandshake", "tls_handshake"),
                 ("expectContinue", "expect_continue"), ("idleConn", "idle_conn"))


def _timeouts(p: Problems, raw: object, base: str, defaults: Timeouts) -> Timeouts:
    """``timeouts:`` of a model or peer: whole seconds >= 0, each defaulting on its own."""
    d = p.mapping(raw, base) or {}
    values: dict[str, float] = {}
    for key, name in _TIMEOUT_KEYS:
        value = p.seconds(d, key, base, getattr(defaults, name))
        if value < 0:
            p.error(f"{base}.{key}", f"must be >= 0 seconds, got {go_format(d.get(key))}")
            value = getattr(defaults, name)
        values[name] = value
    return Timeouts(**values)


_MODALITIES = ("text", "audio", "image")


def _capabilities(p: Problems, raw: object, base: str) -> Capabilities:
    """``capabilities:``: modalities in and out, tools, reranker, context size."""
    d = p.mapping(raw, base) or {}
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("in", "out"):
        names = p.strings(d, key, base)
        for index, name in enumerate(names):
            if name not in _MODALITIES:
                p.error(f"{base}.{key}[{index}]", f"invalid modality {name!r}, must be one of: "
                        + ", ".join(_MODALITIES))
        lists[key] = tuple(names)
    context = p.integer(d, "context", base, 0)
    if context < 0:
        p.error(f"{base}.context", f"must be >= 0, got {context}")
    return Capabilities(inputs=lists["in"], outputs=lists["out"],
                        tools=p.boolean(d, "tools", base, False),
                        reranker=p.boolean(d, "reranker", base, False), context=max(context, 0))


_LOG_TO_STDOUT = ("proxy", "upstream", "both", "none")
_LOG_TIME_FORMATS = ("ansic", "unixdate", "rubydate", "rfc822", "rfc822z", "rfc850", "rfc1123",
                     "rfc1123z", "rfc3339", "rfc3339nano", "kitchen", "stamp", "stampmilli",
                     "stampmicro", "stampnano")


def _observability(p: Problems, tree: Mapping[str, Any]) -> dict[str, Any]:
    """Logging, activity store and capture settings."""
    log_to_stdout = p.string(tree, "logToStdout", "", "both").strip().lower()
    if log_to_stdout not in _LOG_TO_STDOUT:
        p.error("logToStdout", f"must be one of {', '.join(_LOG_TO_STDOUT)}, got "
                f"{describe(tree.get('logToStdout'))}")
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


_DURATION_RE = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}
_MIN_PERFORMANCE_EVERY = 5.0


def go_duration(value: object) -> float | None:
    """Seconds from a Go ``time.Duration`` as yaml.v3 reads one: a string like ``"5s"`` or
    ``"1m30s"``, or an integer count of nanoseconds; ``None`` if it is neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value / 1e9
    if not isinstance(value, str):
        return None
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    text = text.lstrip("+-")
    if text == "0":
        return 0.0
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sign * sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def _performance(p: Problems, raw: object) -> PerformanceConfig:
    d = p.mapping(raw, "performance") or {}
    every = 0.0
    if d.get("every") is not None:
        parsed = go_duration(d["every"])
        if parsed is None:
            p.error("performance.every", "must be a duration like 5s, 30s or 1m, got "
                    f"{describe(d['every'])}")
        else:
            every = parsed
    if every == 0:
        every = _MIN_PERFORMANCE_EVERY
    elif every < _MIN_PERFORMANCE_EVERY:
        p.error("performance.every", f"every must be at least 5s, got {d['every']}")
    return PerformanceConfig(disabled=p.boolean(d, "disabled", "performance", False),
                             every=max(every, _MIN_PERFORMANCE_EVERY))


def _ui(p: Problems, raw: object) -> UIConfig:
    activity = p.mapping((p.mapping(raw, "ui") or {}).get("activity"), "ui.activity") or {}
    if activity.get("session_id") is None:
        return UIConfig()
    names: list[str] = []
    for name in p.strings(activity, "session_id", "ui.activity"):
        name = name.strip()
        if name and name.lower() not in (n.lower() for n in names):
            names.append(name)
    return UIConfig(activity=UIActivityConfig(session_id=tuple(names)))


def _ignore_paths(p: Problems, raw: object) -> tuple[str, ...]:
    """``upstream.ignorePaths``: each must compile; none given means llama-swap's default."""
    upstream = p.mapping(raw, "upstream") or {}
    patterns = p.strings(upstream, "ignorePaths", "upstream")
    for index, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as e:
            p.error(f"upstream.ignorePaths[{index}]",
                    f"invalid regular expression {pattern!r}: {e}")
    return tuple(patterns) or DEFAULT_IGNORE_PATHS


def decode_config(p: Problems, exp: Expansion) -> Config:
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
        p.error("models", f"must be a mapping of model id to settings, got {describe(raw_models)}")
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
                    f"{describe(model)}")
            continue
        models[model_id] = _model(p, model_id, model, g, exp)
    aliases = check_aliases(p, models)
    register_param_aliases(p, models, aliases)

    group_base, raw_groups, matrix_base, raw_matrix = router_source(p, tree)
    groups = read_groups(p, group_base, raw_groups, list(raw_models), aliases)
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
    selectors, profiles = selectors_and_profiles(p, tree, models, aliases, peers, groups,
                                                  bool(raw_matrix), matrix)
    api_keys, api_key_scopes = read_api_keys(p, tree, {**aliases, **{m: m for m in models}})
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
        preload=read_preload(p, tree, raw_models, aliases),
        global_ttl=global_ttl,
        unload_timeout=unload_timeout,
        include_aliases_in_list=p.boolean(tree, "includeAliasesInList", "", False),
        fast_path=p.boolean(tree, "fastPath", "", True),
        send_loading_state=p.boolean(tree, "sendLoadingState", "", False),
        supervision=supervision,
        api_keys=api_keys,
        api_key_scopes=api_key_scopes,
        peers=peers,
        selectors=selectors,
        profiles=profiles,
        max_request_size=_byte_size(p, tree, "maxRequestSize", 100 * 1024 * 1024),
        slot_cache=parse_slot_cache_root(tree.get("slotCache"), p.error),
        ui=_ui(p, tree.get("ui")),
        performance=_performance(p, tree.get("performance")),
        ignore_paths=_ignore_paths(p, tree.get("upstream")),
    )
