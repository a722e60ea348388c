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
    ILogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    formatEvent,
    globalLogPublisher,
)
from zope.interface import implementer

LOG_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
              "error": LogLevel.error}
LOG_TO_STDOUT = ("proxy", "upstream", "both", "none")

llamaswap_events = LogPublisher()
"""Every event llamaswap's loggers emit, before any filter (``get_logger``)."""


TEXT_KEY = "_text"
"""An event's message already formatted (``literal``): ``ProxyLogCollector`` uses it as is."""


def literal(text: str) -> str:
    """``text`` as a log format with no fields: for messages formatted once by the caller
    (one access line per request), so that no observer parses a format for them again.
    Pass ``text`` itself as ``_text=`` too (``TEXT_KEY``)."""
    return text.replace("{", "{{").replace("}", "}}")


def emit_text(logger: Logger, text: str, level: LogLevel = LogLevel.info,
              **fields: object) -> None:
    """``logger.emit(level, literal(text), _text=text, **fields)``, for a line per request.

    The event is the one ``Logger.emit`` builds (its documented keys), without that
    method's check that ``level`` is a ``LogLevel``, which walks every level each time:
    callers pass one of the constants.
    """
    fields.update(log_logger=logger, log_level=level, log_namespace=logger.namespace,
                  log_source=logger.source, log_format=literal(text), log_time=time.time())
    fields[TEXT_KEY] = text
    logger.observer(fields)


def get_logger(namespace: str | None = None, source: object = None) -> Logger:
    """A ``Logger`` whose events go through llamaswap's log rules (``LogRules``). As a class
    attribute it names the class and each event's source is the instance; ``source`` gives
    a module-level logger one (a service's model output, its access lines)."""
    return Logger(namespace=namespace, source=source, observer=llamaswap_events)


def _is_model_output(event: dict[str, Any]) -> bool:
    return bool(event.get("log_namespace", "").startswith("llamaswap.model."))


class LogRules:
    """One service's ``logLevel`` and ``logToStdout``, and the in-memory observers
    (``collectors``: ``/logs``, ``/api/events``) that see its events past the level.

    Rules apply only between ``attach`` and ``detach`` (a service's start and stop), and
    only to events of that service: those whose source ``owns`` accepts, and those with no
    owner among running services, which each attached service's level admits for its own
    collectors and which reach the process log once. Twisted's own events and those of an
    embedding application are never filtered.
    """

    def __init__(self, level: str = "info", to_stdout: str = "both",
                 owns: Callable[[object], bool] | None = None) -> None:
        self._level = LogLevel.info
        self._stdout = {"proxy": True, "upstream": True}
        self.owns: Callable[[object], bool] = owns or (lambda source: False)
        self.collectors = LogPublisher()
        self.set_level(level)
        self.set_to_stdout(to_stdout)

    def set_level(self, level: str) -> None:
        """A config's ``logLevel``: debug, info (also for an unknown name), warn, error."""
        self._level = LOG_LEVELS.get(level, LogLevel.info)

    def set_to_stdout(self, which: str) -> None:
        """A config's ``logToStdout``: ``proxy``, ``upstream``, ``both`` or ``none``."""
        self._stdout["proxy"] = which in ("proxy", "both")
        self._stdout["upstream"] = which in ("upstream", "both")

    def admits(self, event: dict[str, Any]) -> bool:
        """``logLevel`` lets the event through (to collectors, maybe to the process log):
        ``LogLevelFilterPredicate``'s rule for one level over every namespace, without its
        per-event walk up the namespace's parts."""
        level = event.get("log_level")
        return level is not None and bool(event.get("log_namespace")) and level >= self._level

    def shows(self, event: dict[str, Any]) -> bool:
        """``logToStdout`` sends the event to the process log."""
        return self._stdout["upstream" if _is_model_output(event) else "proxy"]


DEFAULT_RULES = LogRules()
"""What applies while no service runs (events logged while setting one up): info, both."""


@implementer(ILogObserver)
class _Dispatch:
    """Sends each of llamaswap's events to the rules of the running service it belongs to,
    and on to the process log (``globalLogPublisher``) at most once."""

    def __init__(self) -> None:
        self.attached: list[LogRules] = []

    def __call__(self, event: dict[str, Any]) -> None:
        attached = self.attached
        if not attached:
            if DEFAULT_RULES.admits(event) and DEFAULT_RULES.shows(event):
                globalLogPublisher(event)
            return
        source = event.get("log_source")
        if source is not None:
            for rules in attached:
                if rules.owns(source):
                    if rules.admits(event):
                        rules.collectors(event)
                        if rules.shows(event):
                            globalLogPublisher(event)
                    return
        shown = False
        for rules in attached:
            if rules.admits(event):
                rules.collectors(event)
                shown = shown or rules.shows(event)
        if shown:
            globalLogPublisher(event)


_dispatch = _Dispatch()
llamaswap_events.addObserver(_dispatch)


def attach(rules: LogRules) -> None:
    """Apply ``rules`` from now on (a service starts)."""
    if rules not in _dispatch.attached:
        _dispatch.attached.append(rules)


def detach(rules: LogRules) -> None:
    """Stop applying ``rules`` (a service stopped); harmless if they were not attached."""
    if rules in _dispatch.attached:
        _dispatch.attached.remove(rules)


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
        self.time_format = time_format
        """``logTimeFormat``; a reload sets it."""

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace", "").startswith("llamaswap.model."):
            return
        text = event.get(TEXT_KEY) or formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += f": {failure.getErrorMessage()}"
        level = event.get("log_level", LogLevel.info).name.upper()
        prefix = format_log_time(event.get("log_time", time.time()), self.time_format)
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
