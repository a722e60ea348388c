# -*- test-case-name: tests.test_cli -*-
"""The ``llamaswap`` command: ``llamaswap check-config CONFIG`` and ``llamaswap --version``.

The server itself runs under twistd (``twistd llamaswap``); this command only inspects.
``check-config`` loads the config exactly as the daemon does and prints what the daemon
would run: macros expanded, ``${PORT}`` assigned, groups completed with ``(default)``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from llamaswap import __version__
from llamaswap.config import Config, ConfigError, ModelConfig, load_config
from llamaswap.slotcache.config import model_cache_dir

__all__ = ["main", "resolved"]


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _slot_cache(model: ModelConfig, config: Config) -> dict[str, Any] | None:
    """A model's ``slotCache`` when enabled, with the directory ``${SLOT_CACHE_DIR}`` names."""
    if not model.slot_cache.enabled:
        return None
    return {"enabled": True, "maxBytes": model.slot_cache.max_bytes,
            "idleSave": _number(model.slot_cache.idle_delay(config.slot_cache)),
            "dir": model_cache_dir(config.slot_cache.dir, model.id)}


def _model(model: ModelConfig, config: Config) -> dict[str, Any]:
    """One model; ``cmd`` as the argv llamaswap executes, shell-quoted to read unambiguously."""
    fields = {
        "cmd": shlex.join(model.cmd),
        "cmdStop": model.cmd_stop or None,
        "port": model.port,
        "proxy": model.proxy,
        "checkEndpoint": model.check_endpoint or "none",
        "aliases": list(model.aliases),
        "env": [f"{name}={value}" for name, value in model.env],
        "ttl": _number(model.ttl),
        "unloadTimeout": _number(model.unload_timeout),
        "concurrencyLimit": model.concurrency_limit,
        "useModelName": model.use_model_name or None,
        "unlisted": model.unlisted,
        "name": model.name or None,
        "description": model.description or None,
        "metadata": dict(model.metadata) or None,
        "slotCache": _slot_cache(model, config),
    }
    return {key: value for key, value in fields.items() if value is not None}


def resolved(config: Config) -> dict[str, Any]:
    """The config as the daemon uses it, in llama-swap's key names, as plain data."""
    return {
        "healthCheckTimeout": _number(config.health_check_timeout),
        "logLevel": config.log_level,
        "startPort": config.start_port,
        "globalTTL": _number(config.global_ttl),
        "unloadTimeout": _number(config.unload_timeout),
        "includeAliasesInList": config.include_aliases_in_list,
        "preload": list(config.preload),
        "slotCache": {"dir": config.slot_cache.dir, "maxBytes": config.slot_cache.max_bytes,
                      "saveTimeout": _number(config.slot_cache.save_timeout),
                      "restoreTimeout": _number(config.slot_cache.restore_timeout),
                      "idleSave": _number(config.slot_cache.idle_save)},
        "models": {model_id: _model(model, config) for model_id, model in config.models.items()},
        "groups": {
            group.id: {"swap": group.swap, "exclusive": group.exclusive,
                       "persistent": group.persistent, "members": list(group.members)}
            for group in config.groups.values()
        },
    }


def check_config(path: str | None, output_format: str, config_dir: str | None = None) -> int:
    """Print the resolved config (stdout) and the findings (stderr); 0 if usable, else 1."""
    try:
        config = load_config(path, config_dir=config_dir)
    except ConfigError as e:
        print(str(e), file=sys.stderr)  # the very lines twistd prints for this config
        return 1
    data = resolved(config)
    if output_format == "json":
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1 << 16), end="")
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{config.path}: OK ({len(config.models)} models, {len(config.groups)} groups"
          f"{f', {len(config.warnings)} warnings' if config.warnings else ''})",
          file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamaswap",
        description="Inspect llamaswap configurations. Run the server with "
                    "`twistd -n llamaswap -c CONFIG` (see `twistd llamaswap --help`).")
    parser.add_argument("--version", action="version", version=f"llamaswap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check-config", help="validate a config and print it resolved, starting nothing",
        description="Validate CONFIG as the daemon would and print it resolved (macros "
                    "expanded, ports assigned, groups). Problems and warnings go to stderr, "
                    "one line each. Exit status 0 if the config is usable, 1 if not.")
    check.add_argument("config", metavar="CONFIG", nargs="?",
                       help="the YAML configuration file (optional with --config-dir)")
    check.add_argument("--config-dir", metavar="DIR",
                       help="merge the *.yaml and *.yml files of DIR after CONFIG, in name "
                            "order, as the daemon's --config-dir does")
    check.add_argument("--format", choices=("yaml", "json"), default="yaml",
                       help="output format of the resolved config (default: yaml)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        if not args.config and not args.config_dir:
            _parser().error("check-config needs CONFIG, --config-dir or both")
        return check_config(args.config, args.format, args.config_dir)
    raise AssertionError(args.command)  # argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
