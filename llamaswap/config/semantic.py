# -*- test-case-name: tests.test_config -*-
"""Checks across entries: aliases, groups, preload, selectors and profiles, API keys.

Each function works on already decoded values and reports what does not fit together.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any

from llamaswap.config.macros import join_path
from llamaswap.config.model import (
    API_KEY_SCOPES,
    DEFAULT_GROUP,
    ApiKeyScope,
    Config,
    GroupConfig,
    ModelConfig,
    PeerConfig,
)
from llamaswap.config.problems import Problems
from llamaswap.config.structure import describe, is_set
from llamaswap.matrix import Matrix
from llamaswap.selectors import ProfileConfig, SelectorConfig, parse_profiles, parse_selectors

__all__ = [
    "check_aliases",
    "read_api_keys",
    "read_groups",
    "read_preload",
    "register_param_aliases",
    "router_source",
    "selectors_and_profiles",
]


def check_aliases(p: Problems, models: dict[str, ModelConfig]) -> dict[str, str]:
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


def router_source(p: Problems, tree: Mapping[str, Any]) -> tuple[str, object, str, object]:
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
    has_top = top_matrix is not None or is_set(top_groups)
    has_routing = use != "" or settings_matrix is not None or is_set(settings_groups)
    if has_top and has_routing:
        p.error("routing", "config uses both the legacy top-level 'matrix'/'groups' keys and "
                "the new 'routing.router' block; please migrate the top-level keys into "
                "'routing.router' and remove them")
        return "groups", top_groups, "matrix", None
    if has_top:
        if top_matrix is not None and is_set(top_groups):
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


def read_groups(
    p: Problems, base: str, raw: object, model_ids: Collection[str], aliases: Mapping[str, str]
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
            p.error(path, f"must be a mapping, got {describe(group)}")
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


def read_preload(
    p: Problems, tree: Mapping[str, Any], models: Collection[str], aliases: Mapping[str, str]
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


def register_param_aliases(p: Problems, models: dict[str, ModelConfig],
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


def read_api_keys(p: Problems, tree: Mapping[str, Any],
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
    first: dict[str, tuple[int, ApiKeyScope]] = {}
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
        if not isinstance(entry, str):  # 12345 or true: YAML typed it; say so, quote nothing
            p.error(base, "api key must be a string (put it in quotes)")
            continue
        key = entry
        if not key.strip():
            p.error(base, "empty api key found in apiKeys")
        elif any(c.isspace() for c in key):
            p.error(base, "api key cannot contain spaces")
        elif key in first:
            # The same key twice: harmless if the grants agree, ambiguous if they differ.
            other, granted = first[key]
            if granted != (scope or ApiKeyScope()):
                p.error(base, f"the same api key as apiKeys[{other}] with a different scope or "
                        "models; give each key one entry")
        else:
            first[key] = (index, scope or ApiKeyScope())
            keys.append(key)
            if scope is not None:
                scopes[key] = scope
    return tuple(keys), scopes


def selectors_and_profiles(
    p: Problems, tree: Mapping[str, Any], models: Mapping[str, ModelConfig],
    aliases: Mapping[str, str], peers: Mapping[str, PeerConfig],
    groups: Mapping[str, GroupConfig], uses_matrix: bool, matrix: Matrix | None = None,
) -> tuple[dict[str, SelectorConfig], dict[str, ProfileConfig]]:
    """``selectors`` and ``profiles``, checked against models, aliases and peers, and
    (spillover) against the groups or the compiled ``matrix`` of the router in use."""
    probe = Config(models=models, groups=groups, peers=peers)

    def resolve(name: str) -> str | None:
        local = probe.resolve(name)
        remote = None if local else probe.resolve_peer(name)
        return local or ("/".join(remote) if remote else None)

    def taken(name: str) -> bool:
        return name in models or name in aliases or probe.resolve_peer(name) is not None

    def coexistence(local: list[str]) -> str | None:
        if uses_matrix:
            if matrix is None or any(set(local) <= members for _name, family in matrix.sets
                                     for members in family):
                return None  # (no compiled matrix: why is reported already)
            return "spillover targets must all appear together in one expanded matrix set"
        group = probe.group_of(local[0])
        if group.swap:
            return "spillover targets must share a group with swap: false"
        if not all(m in group.members for m in local):
            return "spillover targets must share one routing group"
        return None

    selectors = parse_selectors(p, tree.get("selectors"), resolve, lambda m: m in models,
                                taken, coexistence)
    profiles = parse_profiles(p, tree.get("profiles"), resolve, selectors)
    _check_pins_against_peers(p, profiles, peers)
    return selectors, profiles


def _check_pins_against_peers(p: Problems, profiles: Mapping[str, ProfileConfig],
                              peers: Mapping[str, PeerConfig]) -> None:
    """A pin named ``<peer>/<model>`` would hide that peer model while its profile is
    active; like llama-swap, a name a peer already owns cannot be pinned."""
    owned = {f"{peer.id}/{model}" for peer in peers.values() for model in peer.models}
    for profile in profiles.values():
        for requested in profile.pins:
            if requested in owned:
                p.error(f"profiles.{profile.name}.pins.{requested}",
                        f'profile {profile.name} pin "{requested}" conflicts with the fully '
                        "qualified peer model name")
