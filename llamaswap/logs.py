"""Bounded in-memory logs: a model's output must always be read, and must never grow without end."""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    LogPublisher,
    PredicateResult,
    formatEvent,
    globalLogPublisher,
)
from zope.interface import implementer

LOG_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
              "error": LogLevel.error}

# Everything llamaswap logs passes this filter, set from the config's ``logLevel``. Twisted's
# own events and those of an embedding application are not affected.
_level_filter = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)


@implementer(ILogFilterPredicate)
def _to_stdout(event: dict[str, Any]) -> PredicateResult:
    """``logToStdout``: which of llamaswap's own events reach the process log (stdout)."""
    is_model = event.get("log_namespace", "").startswith("llamaswap.model.")
    wanted = _stdout_sources["upstream" if is_model else "proxy"]
    return PredicateResult.maybe if wanted else PredicateResult.no


_stdout_sources = {"proxy": True, "upstream": True}
# After the level filter, events fan out to the process log and to in-memory collectors
# (``ProxyLogCollector``, for /logs and /api/events), which see them whatever logToStdout says.
llamaswap_events = LogPublisher(FilteringLogObserver(globalLogPublisher, [_to_stdout]))
_filtered = FilteringLogObserver(llamaswap_events, [_level_filter])
# Before any filter: for observers that must see every event whatever ``logLevel`` says
# (metrics learn why a model is stopped from the router's info lines).
llamaswap_all_events = LogPublisher(_filtered)


TEXT_KEY = "_text"
"""An event's message already formatted (``literal``): ``ProxyLogCollector`` uses it as is."""


def literal(text: str) -> str:
    """``text`` as a log format with no fields: for messages formatted once by the caller
    (one access line per request), so that no observer parses a format for them again.
    Pass ``text`` itself as ``_text=`` too (``TEXT_KEY``)."""
    return text.replace("{", "{{").replace("}", "}}")


def get_logger(namespace: str | None = None) -> Logger:
    """A ``Logger`` subject to ``logLevel`` (as a class attribute it names the class)."""
    return Logger(namespace=namespace, observer=llamaswap_all_events)


def set_log_level(level: str) -> None:
    """Apply a config ``logLevel`` (debug, info, warn, error) to all of llamaswap's logs."""
    _level_filter.setLogLevelForNamespace("", LOG_LEVELS.get(level, LogLevel.info))


LOG_TO_STDOUT = ("proxy", "upstream", "both", "none")


def set_log_to_stdout(which: str) -> None:
    """Apply a config ``logToStdout``: ``proxy`` (default), ``upstream``, ``both``, ``none``."""
    _stdout_sources["proxy"] = which in ("proxy", "both")
    _stdout_sources["upstream"] = which in ("upstream", "both")


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


class LogStream(LogRing):
    """A ``LogRing`` that can also be followed live.

    Subscribers are called synchronously with each line and must return at once; a reader
    that cannot keep up drops lines on its side (``web.observe``), so a slow reader never
    slows a model's pipes or the proxy.
    """

    def __init__(self, max_bytes: int = DEFAULT_RING_BYTES) -> None:
        super().__init__(max_bytes)
        self._subscribers: list[Callable[[str], None]] = []

    def append(self, line: str) -> None:
        super().append(line)
        for subscriber in list(self._subscribers):
            subscriber(line)

    def subscribe(self, subscriber: Callable[[str], None]) -> Callable[[], None]:
        """Call ``subscriber(line)`` for every new line; returns the unsubscribe function."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe


_GO_TIME_FORMATS: dict[str, Callable[[datetime], str]] = {
    "ansic": lambda t: t.strftime("%a %b %e %H:%M:%S %Y"),
    "unixdate": lambda t: t.strftime("%a %b %e %H:%M:%S %Z %Y"),
    "rubydate": lambda t: t.strftime("%a %b %d %H:%M:%S %z %Y"),
    "rfc822": lambda t: t.strftime("%d %b %y %H:%M %Z"),
    "rfc822z": lambda t: t.strftime("%d %b %y %H:%M %z"),
    "rfc850": lambda t: t.strftime("%A, %d-%b-%y %H:%M:%S %Z"),
    "rfc1123": lambda t: t.strftime("%a, %d %b %Y %H:%M:%S %Z"),
    "rfc1123z": lambda t: t.strftime("%a, %d %b %Y %H:%M:%S %z"),
    "rfc3339": lambda t: t.isoformat(timespec="seconds"),
    "rfc3339nano": lambda t: t.isoformat(timespec="microseconds"),
    "kitchen": lambda t: t.strftime("%I:%M%p").lstrip("0"),
    "stamp": lambda t: t.strftime("%b %e %H:%M:%S"),
    "stampmilli": lambda t: t.strftime("%b %e %H:%M:%S.") + f"{t.microsecond // 1000:03d}",
    "stampmicro": lambda t: t.strftime("%b %e %H:%M:%S.%f"),
    "stampnano": lambda t: t.strftime("%b %e %H:%M:%S.%f") + "000",
}
LOG_TIME_FORMATS = tuple(_GO_TIME_FORMATS)


def format_log_time(when: float, time_format: str) -> str:
    """``logTimeFormat`` (llama-swap's Go layout names) as a line prefix; ``""`` means none."""
    render = _GO_TIME_FORMATS.get(time_format)
    return render(datetime.fromtimestamp(when).astimezone()) + " " if render else ""


@implementer(ILogObserver)
class ProxyLogCollector:
    """Copies llamaswap's own log events (not the models' output) into a ``LogStream``,
    one ``[LEVEL] message`` line each, as llama-swap's proxy log has them."""

    def __init__(self, stream: LogStream, time_format: str = "") -> None:
        self._stream = stream
        self._time_format = time_format

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace", "").startswith("llamaswap.model."):
            return
        text = event.get(TEXT_KEY) or formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += f": {failure.getErrorMessage()}"
        level = event.get("log_level", LogLevel.info).name.upper()
        prefix = format_log_time(event.get("log_time", time.time()), self._time_format)
        for line in text.splitlines() or [""]:
            self._stream.append(f"{prefix}[{level}] {line}")


_JSON_SKIP = frozenset({"log_logger", "log_source", "log_observer", "log_trace", "log_io",
                        "log_format", "log_failure", "log_level", "log_time",
                        "log_namespace", "format", "message", "isError", "system", "time"})


def event_as_json_line(event: dict[str, Any]) -> str:
    """One log event as a flat JSON object: time, level, namespace, message, its fields."""
    level = event.get("log_level", LogLevel.info)
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", time.time())).astimezone()
        .isoformat(timespec="milliseconds"),
        "level": level.name,
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key in _JSON_SKIP or key.startswith("_"):
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        record[key] = value
    failure = event.get("log_failure")
    if failure is not None:
        record["error"] = failure.getErrorMessage()
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False)


@implementer(ILogObserver)
class JSONLinesObserver:
    """Writes every log event as one JSON line, for log shippers (Vector, Loki, journald)."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, event: dict[str, Any]) -> None:
        self._out.write(event_as_json_line(event) + "\n")
        self._out.flush()


def json_lines_observer() -> JSONLinesObserver:
    """For ``twistd --logger=llamaswap.logs.json_lines_observer``: JSON lines on stdout."""
    return JSONLinesObserver(sys.stdout)
