# -*- test-case-name: tests.test_systemd -*-
"""systemd's notification protocol (``sd_notify``), without libsystemd.

Under ``Type=notify`` systemd hands the service a datagram socket in ``NOTIFY_SOCKET`` and
waits for ``READY=1`` before it counts the unit as started (and before it starts units
ordered ``After=`` it). With ``WatchdogSec=`` it also sets ``WATCHDOG_USEC`` and restarts
the service when no ``WATCHDOG=1`` arrives within that time; the pings come from the
reactor, so a blocked reactor stops them and systemd restarts llamaswap. A reload (SIGHUP)
is framed by ``RELOADING=1`` and ``READY=1``, as ``Type=notify-reload`` expects.

Socket activation needs no code here: Twisted's ``systemd:domain=INET:index=0`` endpoint
adopts the socket systemd passes in ``LISTEN_FDS``.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from llamaswap.logs import get_logger

__all__ = ["Notifier", "SystemdNotifyService", "notify_address", "watchdog_interval"]

log = get_logger()

_ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def notify_address(value: str) -> str | bytes | None:
    """The ``AF_UNIX`` address ``NOTIFY_SOCKET`` names: a path, or ``@name`` for the
    abstract namespace (a leading NUL byte). ``None`` for anything else (unset, or
    systemd's ``vsock:`` form, which llamaswap does not speak)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None


def watchdog_interval(environ: MutableMapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC`` as sd_watchdog_enabled
    recommends, or ``None`` when the watchdog is off or meant for another process."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    watched = environ.get("WATCHDOG_PID", "")
    if usec <= 0 or (watched and watched != str(pid)):
        return None
    return usec / 1_000_000 / 2


def _global_reactor() -> Any:
    from twisted.internet import reactor
    return reactor


class Notifier:
    """Sends notification datagrams to one ``NOTIFY_SOCKET`` address; never blocks."""

    def __init__(self, address: str | bytes) -> None:
        self.address = address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._socket.setblocking(False)

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; ``False`` (and a log line) on failure,
        because a lost notification must not take the server down."""
        message = "\n".join(assignments).encode()
        try:
            self._socket.sendto(message, self.address)
        except OSError as e:
            reason = "its queue is full" if e.errno == errno.EAGAIN else e.strerror or str(e)
            log.warn("systemd notification {message!r} not sent: {reason}",
                     message=message.decode(), reason=reason)
            return False
        return True

    def close(self) -> None:
        self._socket.close()


class SystemdNotifyService(Service):
    """``READY=1`` when started, ``WATCHDOG=1`` every half ``WatchdogSec``, ``STOPPING=1``
    when stopped. Does nothing outside systemd (no ``NOTIFY_SOCKET``).

    Start it after the services whose readiness it announces: ``MultiService`` starts its
    children in order and stops them in reverse, so as the last child it says ``READY=1``
    once the listeners are up and ``STOPPING=1`` before anything else stops.
    """

    def __init__(self, environ: MutableMapping[str, str] | None = None,
                 clock: IReactorTime | None = None, status: str = "",
                 notifier_factory: Callable[[str | bytes], Any] = Notifier) -> None:
        """Reads (and removes, as ``sd_notify(unset_environment=1)`` does, so that model
        processes do not inherit them) ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and
        ``WATCHDOG_PID`` from ``environ`` (default ``os.environ``)."""
        environ = os.environ if environ is None else environ
        self.clock: IReactorTime = clock if clock is not None else _global_reactor()
        self.status = status
        address = notify_address(environ.get("NOTIFY_SOCKET", ""))
        self.watchdog = watchdog_interval(environ, os.getpid()) if address else None
        for name in _ENVIRONMENT:
            environ.pop(name, None)
        self.notifier = notifier_factory(address) if address is not None else None
        self._pings: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        if self.notifier is None:
            return
        ready = ["READY=1", f"MAINPID={os.getpid()}"]
        self.notifier.send(*ready, *([f"STATUS={self.status}"] if self.status else []))
        if self.watchdog is not None:
            self._pings = LoopingCall(self.notifier.send, "WATCHDOG=1")
            self._pings.clock = self.clock
            self._pings.start(self.watchdog, now=False).addErrback(
                lambda f: log.failure("systemd watchdog pings failed", f))

    def around_reload(self, reload: Callable[[], None]) -> None:
        """Run ``reload`` between ``RELOADING=1`` and ``READY=1``, so that ``systemctl reload``
        returns once the new config is in effect (and ``Type=notify-reload`` units work)."""
        if self.notifier is None or not self.running:
            reload()
            return
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={now_usec}",
                           "STATUS=reloading the config")
        try:
            reload()
        finally:
            self.notifier.send("READY=1", *([f"STATUS={self.status}"] if self.status else []))

    def stopService(self) -> None:
        super().stopService()
        if self._pings is not None and self._pings.running:
            self._pings.stop()
        self._pings = None
        if self.notifier is not None:
            self.notifier.send("STOPPING=1", "STATUS=stopping: draining requests, stopping "
                               "models")
