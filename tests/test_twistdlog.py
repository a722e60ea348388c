"""twistd's log lines, with the time stamp formatted once a second: the same bytes as
Twisted's ``textFileLogObserver``, to the destination twistd would pick."""

from __future__ import annotations

import io
import signal
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogLevel, textFileLogObserver
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile

from llamaswap.twistdlog import observer_for, text_observer, time_formatter


def events() -> list[dict[str, Any]]:
    """Events across second boundaries, a multi-line message, a failure, no time."""
    base = 1_795_797_224.0
    out: list[dict[str, Any]] = []
    for i, offset in enumerate((0.0, 0.25, 0.999999, 1.0, 1.5, 61.0, 3600.2, -0.5)):
        out.append({"log_format": "line {n} {{literal}}", "n": i, "log_time": base + offset,
                    "log_namespace": "llamaswap.access", "log_level": LogLevel.info})
    out.append({"log_format": "two\nlines", "log_time": base + 2, "log_system": "custom"})
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        out.append({"log_format": "oops", "log_failure": Failure(), "log_time": base + 3,
                    "log_namespace": "x", "log_level": LogLevel.error})
    out.append({"log_format": "no time", "log_namespace": "x", "log_level": LogLevel.warn})
    return out


def test_lines_are_byte_for_byte_twisteds() -> None:
    ours, theirs = io.StringIO(), io.StringIO()
    observer, reference = text_observer(ours), textFileLogObserver(theirs)
    for event in events():
        observer(event)
        reference(event)
    assert ours.getvalue() == theirs.getvalue()
    assert ours.getvalue().count("\n") > len(events())  # the traceback is in both


def test_the_time_is_formatted_once_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    from llamaswap import twistdlog

    calls: list[float | None] = []
    real = twistdlog.formatTime

    def counting(when: float | None, time_format: str | None = None) -> str:
        calls.append(when)
        return real(when, time_format)

    monkeypatch.setattr(twistdlog, "formatTime", counting)
    format_time = time_formatter()
    stamps = [format_time(100.0 + t / 10) for t in range(25)]  # 100.0 ... 102.4
    assert len(calls) == 3 and stamps[0] == real(100.5) and stamps[-1] == real(102.0)


def test_destination_is_what_twistd_would_choose(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # leave this process's SIGUSR1
    assert observer_for({"syslog": True, "nodaemon": True}) is None
    assert observer_for({"logger": object(), "nodaemon": True}) is None
    assert observer_for({"logfile": "-", "nodaemon": False}) is None  # twistd refuses it
    for stdout in ({"logfile": "-", "nodaemon": True}, {"logfile": None, "nodaemon": True}):
        observer = observer_for(stdout)
        assert observer is not None and observer._outFile is __import__("sys").stdout
    path = tmp_path / "llamaswap.log"
    observer = observer_for({"logfile": str(path), "nodaemon": False})
    assert observer is not None and isinstance(observer._outFile, LogFile)
    observer({"log_format": "hello", "log_time": 1.0, "log_namespace": "t",
              "log_level": LogLevel.info})
    assert path.read_text().endswith(" [t#info] hello\n")
    observer._outFile.close()
