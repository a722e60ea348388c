# -*- test-case-name: tests.test_twistdlog -*-
"""twistd's text log, the same lines for less CPU: the time stamp formatted once a second.

twistd writes its log with ``textFileLogObserver``, which formats the time of every event
from scratch (a time-zone lookup and ``strftime``). llamaswap logs a line per request, and
that time stamp was ~6% of a proxied request's CPU. Under ``twistd llamaswap`` the
application gets this observer instead (twistd uses an application's ``ILogObserver``
component when it has one, as ``.tac`` files set it): the destination twistd would choose
from ``--logfile`` and ``--nodaemon`` (standard output, or a ``LogFile`` rotated on
``SIGUSR1``), the lines ``formatEventAsClassicLogText`` makes. With ``--syslog`` or
``--logger`` twistd's own choice stands.
"""

from __future__ import annotations

import signal
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


def text_observer(out: IO[Any]) -> FileLogObserver:
    """What ``textFileLogObserver(out)`` writes, with ``time_formatter``'s time stamps."""
    return FileLogObserver(out, partial(formatEventAsClassicLogText,
                                        formatTime=time_formatter()))


def observer_for(twistd: Mapping[str, Any]) -> ILogObserver | None:
    """The observer for twistd's options (``--logfile``, ``--nodaemon``), as twistd's
    ``UnixAppLogger`` would pick its destination; ``None`` to leave the choice to twistd
    (``--syslog``, ``--logger``, or a daemon asked to log to stdout, which twistd refuses)."""
    if twistd.get("logger") or twistd.get("syslog"):
        return None
    name = twistd.get("logfile")
    nodaemon = bool(twistd.get("nodaemon"))
    if name == "-" or (nodaemon and not name):
        return text_observer(sys.stdout) if nodaemon else None
    log_file = LogFile.fromFullPath(name or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):  # as twistd: rotate on SIGUSR1 unless taken

        def rotate(signum: int, frame: Any) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(log_file.rotate)  # type: ignore[attr-defined]

        signal.signal(signal.SIGUSR1, rotate)
    return text_observer(log_file)
