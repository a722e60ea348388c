# -*- test-case-name: tests.test_config -*-
"""The entry points: YAML text or file in, ``Config`` or ``ConfigError`` out.

The pipeline follows llama-swap: ``${env.X}`` on the raw text, YAML
parsing with yaml.v3's scalar rules, macro expansion and ``${PORT}`` allocation, then typed
decoding with defaults and validation. Unlike llama-swap, unknown and not-yet-supported keys
are reported as warnings instead of being dropped silently.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import yaml

from llamaswap.config.decode import decode_config
from llamaswap.config.macros import (
    check_leftovers,
    env_refs_in_text,
    env_refs_in_tree,
    expand_config_macros,
    restore_literals,
    substitute_env,
)
from llamaswap.config.merge import config_sources, describe_sources, merge_tree
from llamaswap.config.model import Config, ConfigError
from llamaswap.config.problems import Problems
from llamaswap.config.structure import MODEL_KEYS, TOP_KEYS, check_structure, describe
from llamaswap.config.yamlv3 import load_yaml, yaml_problem
from llamaswap.slotcache.config import expand_slot_cache_dirs

__all__ = ["load_config", "parse_config"]


def parse_config(
    text: str, path: str = "<string>", environ: Mapping[str, str] | None = None,
    keep_ports: Mapping[str, int] | None = None,
) -> Config:
    """Build a ``Config`` from YAML text, or raise ``ConfigError`` listing every problem.

    ``path`` only labels the messages. ``environ`` feeds ``${env.NAME}`` (default
    ``os.environ``); passing it keeps tests independent of the real environment.
    ``keep_ports`` (model id -> ``${PORT}``, from the config a reload replaces) lets every
    model that is still there keep its port (``macros.allocate_ports``).
    """
    environ = os.environ if environ is None else environ
    p = Problems(path)
    literals: dict[str, str] = {}
    failed_env: set[str] = set()
    tree = _read_tree(p, text, environ, literals, failed_env)
    return _build(p, tree, literals, failed_env, keep_ports)


def _read_tree(p: Problems, text: str, environ: Mapping[str, str], literals: dict[str, str],
               failed_env: set[str]) -> dict[str, Any]:
    """One source's text: ``${env.X}`` substituted, parsed into a mapping (or ``p.fail``)."""
    if "${env." in text:
        try:
            refs = env_refs_in_tree(load_yaml(text))
        except (yaml.YAMLError, RecursionError):
            refs = env_refs_in_text(text)  # like llama-swap: fall back to the raw text
        text, env_problems, failed, _ = substitute_env(text, refs, environ, literals)
        failed_env |= failed
        for where, message in env_problems:
            p.error(where, message)

    try:
        tree = load_yaml(text)
    except yaml.YAMLError as e:
        p.error("", yaml_problem(e, text))
        raise p.fail() from None
    except RecursionError:
        p.error("", "the YAML document is nested too deeply")
        raise p.fail() from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        p.error("", f"the top level must be a mapping of settings, got {describe(tree)}")
        raise p.fail()
    return tree


def _build(p: Problems, tree: dict[str, Any], literals: Mapping[str, str],
           failed_env: set[str], keep_ports: Mapping[str, int] | None) -> Config:
    """The parsed (and merged) tree through macros, structure checks and decoding."""
    expansion = expand_config_macros(tree, p.error, keep_ports)
    if expansion.aborted:
        raise p.fail()
    expansion.tree = restore_literals(expansion.tree, literals, ("cmd", "cmdStop"))
    expand_slot_cache_dirs(expansion.tree, p.error)
    p.add_structure(check_structure(expansion.tree))
    check_leftovers(expansion, TOP_KEYS, MODEL_KEYS, p.error, failed_env)
    config = decode_config(p, expansion)
    p.add_structure_errors()
    if p.errors:
        raise p.fail()
    return replace(config, path=p.path, warnings=tuple(p.warnings))


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the config file: {e.strerror or e}"]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: the config file is not valid UTF-8 ({e})"]) from None


def load_config(path: str | None, environ: Mapping[str, str] | None = None,
                keep_ports: Mapping[str, int] | None = None,
                config_dir: str | None = None) -> Config:
    """Read and parse the config file at ``path`` (see ``parse_config``), merged with the
    ``*.yaml``/``*.yml`` files of ``config_dir`` when one is given (``merge``)."""
    if not config_dir:
        if not path:
            raise ConfigError(["at least one of -c/--config or --config-dir must be given"])
        return parse_config(_read_text(path), path, environ, keep_ports)
    environ = os.environ if environ is None else environ
    sources = config_sources(path, config_dir)
    literals: dict[str, str] = {}
    failed_env: set[str] = set()
    merged: dict[str, Any] | None = None
    for source in sources:
        p = Problems(source)
        tree = _read_tree(p, _read_text(source), environ, literals, failed_env)
        if p.errors:
            raise p.fail()
        if not tree:
            continue  # an empty file adds nothing
        if merged is None:
            merged = tree
        else:
            merge_tree(merged, tree, source)
    config = _build(Problems(describe_sources(path, config_dir, sources)), merged or {},
                    literals, failed_env, keep_ports)
    return replace(config, path=path or config_dir, config_dir=config_dir,
                   sources=tuple(sources))
