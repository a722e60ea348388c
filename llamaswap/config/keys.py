# -*- test-case-name: tests.test_config -*-
"""Which keys llama-swap knows and llamaswap supports: unknown ones are warned about."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Any

from llamaswap.config.macros import join_path
from llamaswap.config.problems import Problems, is_set

__all__ = ["MODEL_KEYS", "TOP_KEYS", "check_all_keys"]


_NOT_SUPPORTED = "not supported yet by llamaswap; ignored"
TOP_KEYS = frozenset({
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
MODEL_KEYS = frozenset({
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


def _check_keys(
    p: Problems, mapping: object, base: str, known: Collection[str],
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
            if is_set(value):
                p.warn(path, unsupported[key])
            continue
        close = difflib.get_close_matches(key.lower(), list(candidates), n=1, cutoff=0.6)
        hint = f" (did you mean '{candidates[close[0]]}'?)" if close else ""
        p.warn(path, f"unknown key, ignored{hint}")


def check_all_keys(p: Problems, tree: Mapping[str, Any]) -> None:
    """Every mapping llamaswap reads gets its keys checked (on the tree before macros)."""
    _check_keys(p, tree, "", TOP_KEYS, _TOP_UNSUPPORTED)
    models = tree.get("models")
    if isinstance(models, dict):
        for model_id, model in models.items():
            _check_keys(p, model, f"models.{model_id}", MODEL_KEYS, _MODEL_UNSUPPORTED)
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
