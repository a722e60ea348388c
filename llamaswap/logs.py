"""Bounded in-memory logs: a model's output must always be read, and must never grow without end."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

LOG_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
              "error": LogLevel.error}

# Everything llamaswap logs passes this filter, set from the config's ``logLevel``. Twisted's
# own events and those of an embedding application are not affected.
_level_filter = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_filtered = FilteringLogObserver(globalLogPublisher, [_level_filter])


def get_logger(namespace: str | None = None) -> Logger:
    """A ``Logger`` subject to ``logLevel`` (as a class attribute it names the class)."""
    return Logger(namespace=namespace, observer=_filtered)


def set_log_level(level: str) -> None:
    """Apply a config ``logLevel`` (debug, info, warn, error) to all of llamaswap's logs."""
    _level_filter.setLogLevelForNamespace("", LOG_LEVELS.get(level, LogLevel.info))


DEFAULT_RING_BYTES = 100 * 1024
MAX_LINE_BYTES = 8 * 1024


class LogRing:
    """The most recent lines of one log, capped by total size (llama-swap keeps 100 KiB)."""

    def __init__(self, max_bytes: int = DEFAULT_RING_BYTES) -> None:
        self._max_bytes = max_bytes
        self._lines: deque[str] = deque()
        self._size = 0

    def append(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line) + 1
        while self._size > self._max_bytes and len(self._lines) > 1:
            self._size -= len(self._lines.popleft()) + 1

    def tail(self, count: int) -> list[str]:
        return list(self._lines)[-count:] if count > 0 else []

    def text(self) -> str:
        return "".join(line + "\n" for line in self._lines)


class LineSplitter:
    """Turns a pipe's byte chunks into complete lines; over-long lines are cut, not held."""

    def __init__(self, emit: Callable[[str], None], max_line: int = MAX_LINE_BYTES) -> None:
        self._emit = emit
        self._max_line = max_line
        self._partial = b""

    def feed(self, data: bytes) -> None:
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            while len(line) > self._max_line:
                self._emit(_decode(line[: self._max_line]))
                line = line[self._max_line :]
            self._emit(_decode(line))
        while len(self._partial) > self._max_line:
            self._emit(_decode(self._partial[: self._max_line]))
            self._partial = self._partial[self._max_line :]

    def flush(self) -> None:
        if self._partial:
            self._emit(_decode(self._partial))
            self._partial = b""


def _decode(line: bytes) -> str:
    return line.rstrip(b"\r").decode("utf-8", "replace")
