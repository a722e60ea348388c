"""sd_notify over a real local datagram socket, with the watchdog driven by a Clock."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from llamaswap import systemd
from llamaswap.systemd import SystemdNotifyService, notify_address, watchdog_interval
from llamaswap.tap import Options, build_service


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd, and its NOTIFY_SOCKET value."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        yield sock, path


def received(sock: socket.socket) -> list[list[str]]:
    """Every datagram waiting on ``sock``, each as its list of lines."""
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            return messages


@pytest.mark.parametrize(("value", "address"), [
    ("/run/systemd/notify", "/run/systemd/notify"),
    ("@llamaswap/notify", b"\0llamaswap/notify"),
    ("", None),
    ("@", None),
    ("vsock:2:1234", None),
    ("relative/path", None),
])
def test_notify_socket_forms(value: str, address: str | bytes | None) -> None:
    assert notify_address(value) == address


@pytest.mark.parametrize(("environ", "interval"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # another process's watchdog
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(environ: dict[str, str],
                                                    interval: float | None) -> None:
    assert watchdog_interval(environ, pid=4242) == interval


def test_ready_watchdog_and_stopping(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    environ = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000",
               "WATCHDOG_PID": str(os.getpid()), "OTHER": "kept"}
    clock = Clock()
    service = SystemdNotifyService(environ, clock, status="serving 2 models")
    # Model processes must not inherit systemd's variables (and ping systemd themselves).
    assert environ == {"OTHER": "kept"}
    assert received(sock) == []  # nothing before the service starts

    service.startService()
    assert received(sock) == [["READY=1", f"MAINPID={os.getpid()}", "STATUS=serving 2 models"]]
    clock.advance(0.9)
    assert received(sock) == []
    clock.advance(0.1)  # half of WatchdogSec=2s
    assert received(sock) == [["WATCHDOG=1"]]
    clock.advance(1.0)
    clock.advance(1.0)
    assert received(sock) == [["WATCHDOG=1"], ["WATCHDOG=1"]]

    service.stopService()
    messages = received(sock)
    assert [m[0] for m in messages] == ["STOPPING=1"]
    assert messages[0][1].startswith("STATUS=stopping")
    clock.advance(10)
    assert received(sock) == []  # no pings after STOPPING=1
    assert clock.getDelayedCalls() == []


def test_abstract_namespace_socket() -> None:
    name = f"llamaswap-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.setblocking(False)
        service = SystemdNotifyService({"NOTIFY_SOCKET": "@" + name}, Clock())
        service.startService()
        service.stopService()
        assert [m[0] for m in received(sock)] == ["READY=1", "STOPPING=1"]


def test_no_watchdog_without_watchdog_usec(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    clock = Clock()
    service = SystemdNotifyService({"NOTIFY_SOCKET": path}, clock)
    service.startService()
    clock.advance(3600)
    assert [m[0] for m in received(sock)] == ["READY=1"]
    assert clock.getDelayedCalls() == []
    service.stopService()


def test_outside_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[object] = []
    monkeypatch.setattr(systemd, "Notifier", lambda address: created.append(address))
    clock = Clock()
    service = SystemdNotifyService({"WATCHDOG_USEC": "1000000"}, clock)
    service.startService()
    assert created == [] and service.notifier is None
    assert clock.getDelayedCalls() == []  # no watchdog without a socket to ping
    service.stopService()


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    from twisted.logger import LogLevel, globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        service = SystemdNotifyService({"NOTIFY_SOCKET": str(tmp_path / "gone")}, Clock())
        service.startService()
        service.stopService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    warnings = [e for e in events if e.get("log_level") == LogLevel.warn
                and "systemd notification" in e.get("log_format", "")]
    assert [e["message"] for e in warnings] == ["READY=1\nMAINPID=" + str(os.getpid()),
                                                 "STOPPING=1\nSTATUS=stopping: draining "
                                                 "requests, stopping models"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest_twisted.ensureDeferred
async def test_twistd_service_is_ready_only_when_listening_and_stopping_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        receiver: tuple[socket.socket, str]) -> None:
    """``build_service`` orders the notifier after llamaswap: READY=1 is sent while the port
    already accepts connections, STOPPING=1 while llamaswap is still running."""
    sock, path = receiver
    config = tmp_path / "config.yaml"
    config.write_text("models:\n  m:\n    cmd: server --port ${PORT}\n")
    port = free_port()
    options = Options()
    options.parseOptions(["-c", str(config), "-l", f"tcp:{port}:interface=127.0.0.1"])
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    top = build_service(options)
    swapper = top.getServiceNamed("llamaswap")

    seen: list[tuple[str, bool, bool]] = []
    original = systemd.Notifier.send

    def observe(self: systemd.Notifier, *assignments: str) -> bool:
        seen.append((assignments[0], listening(port), swapper.running))
        return original(self, *assignments)

    monkeypatch.setattr(systemd.Notifier, "send", observe)
    assert "NOTIFY_SOCKET" not in os.environ  # consumed, not passed on to models
    top.privilegedStartService()
    top.startService()
    assert seen == [("READY=1", True, True)]
    stopped = top.stopService()
    assert seen[1] == ("STOPPING=1", True, True)
    assert [m[0] for m in received(sock)] == ["READY=1", "STOPPING=1"]
    await stopped
    assert not listening(port)


def test_a_reload_is_framed_by_reloading_and_ready(receiver: tuple[socket.socket, str]) -> None:
    """``systemctl reload`` (and ``Type=notify-reload``) waits for READY=1 after RELOADING=1."""
    sock, path = receiver
    service = SystemdNotifyService({"NOTIFY_SOCKET": path}, Clock(), status="serving 1 models")
    service.startService()
    received(sock)
    seen_during: list[list[list[str]]] = []
    service.around_reload(lambda: seen_during.append(received(sock)))
    [[reloading, monotonic, status]] = seen_during[0]
    assert (reloading, status) == ("RELOADING=1", "STATUS=reloading the config")
    assert monotonic.startswith("MONOTONIC_USEC=")
    stamp = int(monotonic.partition("=")[2])
    assert 0 < stamp <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert received(sock) == [["READY=1", "STATUS=serving 1 models"]]

    def failing() -> None:
        raise RuntimeError("reload blew up")

    with pytest.raises(RuntimeError):
        service.around_reload(failing)
    assert [m[0] for m in received(sock)] == ["RELOADING=1", "READY=1"]  # never left reloading
    service.stopService()


def test_a_reload_outside_systemd_just_reloads(monkeypatch: pytest.MonkeyPatch) -> None:
    service = SystemdNotifyService({}, Clock())
    calls: list[str] = []
    service.around_reload(lambda: calls.append("reloaded"))
    assert calls == ["reloaded"]
