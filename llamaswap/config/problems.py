# -*- test-case-name: tests.test_config -*-
"""Collecting config problems, and reading typed values with defaults.

Every reader reports a wrong type and returns the default, so decoding goes on and all
problems of a file end up in one ``ConfigError``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from llamaswap.config.macros import go_format, join_path
from llamaswap.config.model import ConfigError
from llamaswap.config.structure import Finding, describe
from llamaswap.config.yamlv3 import V3_BOOL_STRINGS

__all__ = ["Problems"]

_MAX_MESSAGE = 320


class Problems:
    """Collects ``<file>: <key.path>: <message>`` lines and reads typed values with defaults.

    Every reader reports a wrong type and returns the default, so decoding continues and
    all problems end up in one ``ConfigError``. The schema's findings (``add_structure``)
    join in: its warnings at once, its errors after decoding (``add_structure_errors``) for
    the key paths the decoder, whose words are llama-swap's, had nothing to say about.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self._error_paths: list[str] = []
        self._schema_warned: set[str] = set()
        self._schema_errors: list[Finding] = []

    def _line(self, key: str, message: str) -> str:
        if len(message) > _MAX_MESSAGE:  # a value quoted back whole could be megabytes
            message = f"{message[:_MAX_MESSAGE - 40]}... ({len(message)} characters)"
        return f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}"

    def error(self, key: str, message: str) -> None:
        self.errors.append(self._line(key, message))
        self._error_paths.append(key)

    def warn(self, key: str, message: str) -> None:
        if key in self._schema_warned:
            return  # the schema already said what is wrong with this key
        self.warnings.append(self._line(key, message))

    def add_structure(self, findings: Iterable[Finding]) -> None:
        """Take the schema's findings: warnings now, errors kept for after decoding."""
        for finding in findings:
            if finding.warning:
                self.warn(finding.path, finding.message)
                self._schema_warned.add(finding.path)
            else:
                self._schema_errors.append(finding)

    def add_structure_errors(self) -> None:
        """Report the schema's errors at key paths no decoder error already covers."""
        reported = [path for path in self._error_paths if path]
        for finding in self._schema_errors:
            if not any(_related(finding.path, path) for path in reported):
                self.error(finding.path, finding.message)
        self._schema_errors = []

    def fail(self) -> ConfigError:
        return ConfigError(self.errors, self.warnings)

    def mapping(self, value: object, key: str) -> dict[str, Any] | None:
        """``value`` if it is a mapping; ``None`` (reported unless null) otherwise."""
        if isinstance(value, dict):
            return value
        if value is not None:
            self.error(key, f"must be a mapping, got {describe(value)}")
        return None

    def integer(self, d: Mapping[str, Any], key: str, base: str, default: int) -> int:
        value = d.get(key)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer() and abs(value) < 2.0 ** 63:
            return int(value)  # like yaml.v3: a whole float fits an int field if it fits 64 bits
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        self.error(join_path(base, key), f"must be an integer, got {describe(value)}")
        return default

    def seconds(self, d: Mapping[str, Any], key: str, base: str, default: float) -> float:
        value = d.get(key)
        if value is None:
            return default
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        self.error(join_path(base, key), f"must be a number of seconds, got {describe(value)}")
        return default

    def boolean(self, d: Mapping[str, Any], key: str, base: str, default: bool) -> bool:
        value = d.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value in V3_BOOL_STRINGS:  # yaml.v3 accepts these too
            return V3_BOOL_STRINGS[value]
        self.error(join_path(base, key), f"must be true or false, got {describe(value)}")
        return default

    def string(self, d: Mapping[str, Any], key: str, base: str, default: str = "") -> str:
        value = d.get(key)
        if value is None:
            return default
        if isinstance(value, dict | list):
            self.error(join_path(base, key), f"must be a string, got {describe(value)}")
            return default
        return go_format(value)  # yaml.v3 decodes any scalar into a string field

    def strings(self, d: Mapping[str, Any], key: str, base: str) -> list[str]:
        value = d.get(key)
        if value is None:
            return []
        path = join_path(base, key)
        if not isinstance(value, list):
            self.error(path, f"must be a list of strings, got {describe(value)}")
            return []
        result: list[str] = []
        for index, item in enumerate(value):
            if item is None or isinstance(item, dict | list):
                self.error(join_path(path, index), f"must be a string, got {describe(item)}")
            else:
                result.append(go_format(item))
        return result


def _related(a: str, b: str) -> bool:
    """Whether one key path is the other or lies inside it (``models.m`` and ``models.m.ttl``)."""
    short, long = sorted((a, b), key=len)
    return long == short or long.startswith((short + ".", short + "["))
