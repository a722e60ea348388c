# -*- test-case-name: tests.test_config_dir -*-
"""A configuration directory: several YAML files merged into one tree, as llama-swap does.

Pure code. ``config_sources`` lists what is read (the ``-c`` file first, then the
directory's ``*.yaml``/``*.yml`` files in name order); ``merge_tree`` folds one parsed file
into what came before. The rules (``docs/config-dir.md``): mappings merge key by key; lists
are concatenated; a scalar set twice must be the same value; an empty value gives way to
any other; the id maps (``models``, ``groups``, ``peers``, ...) must not define one id twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from llamaswap.config.model import ConfigError

__all__ = ["IDENTITY_MAPS", "config_sources", "describe_sources", "merge_tree"]

IDENTITY_MAPS = frozenset({
    "models", "groups", "profiles", "selectors", "peers", "matrix",
    "routing.router.settings.groups", "routing.router.settings.matrix",
})
"""Maps of ids: a second source may add ids, never redefine one."""


def config_sources(config_path: str | None, config_dir: str | None) -> list[str]:
    """The files to read, in merge order; ``ConfigError`` naming what is wrong."""
    if not config_path and not config_dir:
        raise ConfigError(["at least one of -c/--config or --config-dir must be given"])
    sources = [config_path] if config_path else []
    if config_dir:
        try:
            names = sorted(entry.name for entry in os.scandir(config_dir)
                           if not entry.is_dir() and entry.name.endswith((".yaml", ".yml")))
        except OSError as e:
            raise ConfigError([f"--config-dir {config_dir}: {e.strerror or e}"]) from None
        files = [os.path.join(config_dir, name) for name in names]
        if config_path and os.path.abspath(config_path) in map(os.path.abspath, files):
            raise ConfigError([f"-c path {config_path} is also present in --config-dir "
                               f"{config_dir}; remove it from one"])
        sources += files
    if not sources:
        raise ConfigError([f"--config-dir {config_dir}: no configuration sources found "
                           "(no *.yaml or *.yml file)"])
    return sources


def merge_tree(into: dict[str, Any], source: dict[str, Any], source_path: str) -> None:
    """Merge the parsed top-level mapping of ``source_path`` into ``into`` (in place).

    Raises ``ConfigError`` with llama-swap's conflict messages, naming the source file.
    """
    _merge_mapping(into, source, "", source_path)


def _join(parent: str, key: object) -> str:
    return f"{parent}.{key}" if parent else str(key)


def _merge_mapping(into: dict[Any, Any], source: dict[Any, Any], path: str,
                   source_path: str) -> None:
    for key, value in source.items():
        child = _join(path, key)
        if key not in into:
            into[key] = value
        elif child in IDENTITY_MAPS:
            _merge_ids(into[key], value, child, str(key), source_path)
        else:
            into[key] = _merge_value(into[key], value, child, source_path)


def _merge_ids(into: Any, source: Any, path: str, map_name: str, source_path: str) -> None:
    if not isinstance(into, dict) or not isinstance(source, dict):
        raise ConfigError([f'{source_path}: conflict at "{path}": expected a mapping'])
    for key, value in source.items():
        if key in into:
            raise ConfigError([f'{source_path}: duplicate {map_name} "{key}" (already '
                               "defined in another config source)"])
        into[key] = value


def _merge_value(old: Any, new: Any, path: str, source_path: str) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        _merge_mapping(old, new, path, source_path)
        return old
    if isinstance(old, list) and isinstance(new, list):
        return [*old, *new]
    if old is None:
        return new
    if new is None:
        return old
    if _scalar(old) and _scalar(new):
        if type(old) is type(new) and old == new:
            return old
        raise ConfigError([f'{source_path}: conflict at "{path}": sets a different value '
                           "than a previous source"])
    raise ConfigError([f'{source_path}: conflict at "{path}": a {_kind(new)} where a '
                       f"previous source has a {_kind(old)}"])


def _scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _kind(value: Any) -> str:
    return "mapping" if isinstance(value, dict) else "list" if isinstance(value, list) \
        else "scalar"


def describe_sources(config_path: str | None, config_dir: str | None,
                     sources: Sequence[str]) -> str:
    """How messages name a merged configuration."""
    if not config_dir:
        return sources[0]
    return f"{config_path} + {config_dir}" if config_path else config_dir
