# -*- test-case-name: tests.test_twistdlog -*-
"""twistd's text log, the same lines for less CPU: time stamps formatted once a second,
one write per reactor turn.

twistd writes its log with ``textFileLogObserver``, which formats the time of every event
from scratch (a time-zone lookup and ``strftime``). llamaswap logs a line per request, and
that time stamp was ~6% of a proxied request's CPU. Under ``twistd llamaswap`` the
application gets this observer instead (twistd uses an application's ``ILogObserver``
component when it has one, as ``.tac`` files set it): the destination twistd would choose
from ``--logfile`` and ``--nodaemon`` (standard output, or a ``LogFile``, which ``tap.py``
rotates on ``SIGUSR1``), the lines ``formatEventAsClassicLogText`` makes. With ``--syslog`` or
``--logger`` twistd's own choice stands.

twistd also writes and flushes every line on its own (a system call, and a lock for a
``LogFile``); ``TurnBuffered`` collects the lines of one reactor turn and writes them
together when the turn ends (at once while the reactor is not running). A crash can lose
the lines of its last turn.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from functools import partial
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python.logfile import LogFile

from llamaswap.logs import TEXT_KEY


def time_formatter(time_format: str = timeFormatRFC3339) -> Callable[[float | None], str]:
    """``formatTime(when, time_format)``, formatted again only when the second changes.

    Exact for formats without fractions of a second (twistd's, RFC 3339): within a second
    the text cannot change, and a time-zone change takes effect on a second's boundary.
    """
    last_second: int | None = None
    last_text = ""

    def format_time(when: float | None) -> str:
        nonlocal last_second, last_text
        if when is None:
            return formatTime(when, time_format)
        second = int(when // 1)
        if second != last_second:
            last_text = formatTime(second, time_format)
            last_second = second
        return last_text

    return format_time


class TurnBuffered:
    """A text file whose writes of one reactor turn go out as one write at its end."""

    def __init__(self, out: Any, reactor: Any) -> None:
        self._out = out
        self._reactor = reactor
        self._pending: list[str] = []
        self._failed = False
        reactor.addSystemEventTrigger("after", "shutdown", self.write_pending)

    def write(self, text: str) -> None:
        self._pending.append(text)
        if not getattr(self._reactor, "running", True):  # before it starts, or once stopped
            self.write_pending()
        elif len(self._pending) == 1:
            self._reactor.callLater(0, self.write_pending)

    def flush(self) -> None:
        """Each line is flushed at the end of its turn (``write_pending``), not now."""

    def write_pending(self) -> None:
        if not self._pending:
            return
        text, self._pending = "".join(self._pending), []
        try:
            self._out.write(text)
            self._out.flush()
        except Exception as e:  # a full disk: not a reason to fail every later turn
            if not self._failed:
                self._failed = True
                sys.stderr.write(f"llamaswap: cannot write the log ({e}); lines are lost\n")


def classic_line(event: dict[str, Any],
                 format_time: Callable[[float | None], str] = formatTime) -> str | None:
    """``formatEventAsClassicLogText(event, format_time)``, quicker for an event whose
    message its emitter formatted already (``TEXT_KEY``: an access line, a model's output
    line): the line is put together here instead of formatting the event's format again."""
    text = event.get(TEXT_KEY)
    if (type(text) is not str or not text or "log_failure" in event
            or "log_system" in event):
        return formatEventAsClassicLogText(event, formatTime=format_time)
    level = event.get("log_level")
    system = f"{event.get('log_namespace', '-')}#{level.name if level is not None else '-'}"
    line = f"{format_time(event.get('log_time'))} [{system}] {text}"
    return (line.replace("\n", "\n\t") if "\n" in line else line) + "\n"


def text_observer(out: IO[Any] | LogFile, reactor: Any = None) -> FileLogObserver:
    """What ``textFileLogObserver(out)`` writes, with ``time_formatter``'s time stamps;
    with ``reactor``, written once per turn (``TurnBuffered``)."""
    target: Any = out if reactor is None else TurnBuffered(out, reactor)
    return FileLogObserver(target, partial(classic_line, format_time=time_formatter()))


def destination_for(twistd: Mapping[str, Any]) -> IO[Any] | LogFile | None:
    """Where twistd's options (``--logfile``, ``--nodaemon``) send the log, as twistd's
    ``UnixAppLogger`` would pick it; ``None`` to leave the choice to twistd (``--syslog``,
    ``--logger``, or a daemon asked to log to stdout, which twistd refuses). A log file is
    opened here; rotating it on a signal is the caller's choice (``tap.py``)."""
    if twistd.get("logger") or twistd.get("syslog"):
        return None
    name = twistd.get("logfile")
    nodaemon = bool(twistd.get("nodaemon"))
    if name == "-" or (nodaemon and not name):
        return sys.stdout if nodaemon else None
    log_file: LogFile = LogFile.fromFullPath(name or "twistd.log")
    return log_file


def observer_for(twistd: Mapping[str, Any], reactor: Any = None) -> ILogObserver | None:
    """The observer for twistd's options (``destination_for``); with ``reactor``, lines are
    written once per turn."""
    destination = destination_for(twistd)
    return text_observer(destination, reactor) if destination is not None else None
