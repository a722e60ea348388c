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

import yaml

from llamaswap.config.decode import decode_config
from llamaswap.config.macros import (
    check_leftovers,
    env_refs_in_text,
    env_refs_in_tree,
    expand_config_macros,
    substitute_env,
)
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

    failed_env: set[str] = set()
    if "${env." in text:
        try:
            refs = env_refs_in_tree(load_yaml(text))
        except (yaml.YAMLError, RecursionError):
            refs = env_refs_in_text(text)  # like llama-swap: fall back to the raw text
        text, env_problems, failed_env = substitute_env(text, refs, environ)
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

    expansion = expand_config_macros(tree, p.error, keep_ports)
    if expansion.aborted:
        raise p.fail()
    expand_slot_cache_dirs(expansion.tree, p.error)
    p.add_structure(check_structure(expansion.tree))
    check_leftovers(expansion, TOP_KEYS, MODEL_KEYS, p.error, failed_env)
    config = decode_config(p, expansion)
    p.add_structure_errors()
    if p.errors:
        raise p.fail()
    return replace(config, path=path, warnings=tuple(p.warnings))


def load_config(path: str, environ: Mapping[str, str] | None = None,
                keep_ports: Mapping[str, int] | None = None) -> Config:
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
    return parse_config(text, path, environ, keep_ports)
