"""twistd's log lines, with the time stamp formatted once a second: the same bytes as
Twisted's ``textFileLogObserver``, to the destination twistd would pick."""

from __future__ import annotations

import io
import signal
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, textFileLogObserver
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile

from llamaswap.logs import TEXT_KEY, literal
from llamaswap.twistdlog import TurnBuffered, observer_for, text_observer, time_formatter


def events() -> list[dict[str, Any]]:
    """Events across second boundaries, a multi-line message, a failure, no time, and
    pre-formatted ones."""
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
    # messages formatted by their emitter (TEXT_KEY), which the observer does not format again
    for text, extra in (('Request 127.0.0.1 "POST /v1/chat/completions HTTP/1.1" 200 3 "" 1ms',
                         {}),
                        ("a {brace} and\na second line", {}),
                        ("its own system", {"log_system": "sys"}),
                        ("no level, no namespace", {"log_namespace": None, "log_level": None}),
                        ("with a failure", {"log_failure": out[-2]["log_failure"]})):
        event = {"log_format": literal(text), TEXT_KEY: text, "log_time": base + 5,
                 "log_namespace": "llamaswap.access", "log_level": LogLevel.info, **extra}
        out.append({key: value for key, value in event.items() if value is not None})
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


class Reactor(Clock):
    """A Clock with system event triggers (what ``TurnBuffered`` uses)."""

    def __init__(self) -> None:
        super().__init__()
        self.triggers: list[Any] = []
        self.running = True

    def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:
        self.triggers.append((phase, event, f))


class Recording:
    def __init__(self, fail: bool = False) -> None:
        self.writes: list[str] = []
        self.flushes = 0
        self.fail = fail

    def write(self, text: str) -> None:
        if self.fail:
            raise OSError("No space left on device")
        self.writes.append(text)

    def flush(self) -> None:
        self.flushes += 1


def test_the_lines_of_one_turn_go_out_in_one_write_at_its_end() -> None:
    reactor, out = Reactor(), Recording()
    observer = text_observer(out, reactor)  # type: ignore[arg-type]
    for n in range(3):
        observer({"log_format": "line {n}", "n": n, "log_time": 10.0,
                  "log_namespace": "t", "log_level": LogLevel.info})
    assert out.writes == []  # nothing during the turn
    reactor.advance(0)
    assert len(out.writes) == 1 and out.flushes == 1
    assert [line.split("] ")[1] for line in out.writes[0].splitlines()] == [
        "line 0", "line 1", "line 2"]
    observer({"log_format": "last words", "log_time": 11.0, "log_namespace": "t",
              "log_level": LogLevel.info})
    [(phase, event, at_shutdown)] = reactor.triggers
    assert (phase, event) == ("after", "shutdown")
    at_shutdown()  # the reactor stops before its next turn: shutdown writes what is left
    assert out.writes[-1].endswith("] last words\n")
    reactor.running = False
    observer({"log_format": "Main loop terminated.", "log_time": 12.0, "log_namespace": "t",
              "log_level": LogLevel.info})  # twistd's last words, once the reactor stopped
    assert out.writes[-1].endswith("] Main loop terminated.\n")


def test_a_log_that_cannot_be_written_says_so_once(capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    reactor = Reactor()
    buffered = TurnBuffered(Recording(fail=True), reactor)
    for _ in range(2):
        buffered.write("x\n")
        reactor.advance(0)
    assert capsys.readouterr().err.count("cannot write the log") == 1
