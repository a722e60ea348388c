# -*- test-case-name: tests.test_listening -*-
"""Listening: the backlog llamaswap asks for, and a service that fails to start when it
cannot listen.

Twisted's stream server endpoints (``tcp:``, ``tcp6:``, ``ssl:``, ``unix:``) listen with a
backlog of 50. A burst of clients connecting at once (hundreds of streaming requests, as an
agent fan-out or a benchmark sends them) overflows that queue whenever the reactor is busy
for a moment, which on a loaded machine it is: the kernel then drops handshakes, and clients
that already saw their connection established get it reset before any answer. A backlog of
``LISTEN_BACKLOG`` absorbs such a burst; the kernel still caps it at
``net.core.somaxconn``. An explicit ``backlog=`` in the endpoint string is kept.

twisted.application's ``StreamServerEndpointService`` logs a port that cannot be bound and
starts anyway, unless a private flag is set. ``ListeningService`` does with public APIs what
llamaswap needs: ``startService`` (and ``privilegedStartService``, which twistd calls before
dropping privileges) raises the listen error when it is known at once, as it is for TCP and
UNIX sockets, so ``twistd`` exits with it instead of serving nothing; stopping stops
listening (or cancels a listen still under way).
"""

from __future__ import annotations

import re
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.python.failure import Failure

from llamaswap.logs import get_logger

log = get_logger("llamaswap.listening")


LISTEN_BACKLOG = 1024
"""Pending connections the kernel may hold for llamaswap before it accepts them."""

_TAKES_BACKLOG = frozenset({"tcp", "tcp6", "ssl", "unix"})
_UNESCAPED_COLON = re.compile(r"(?<!\\):")


def with_backlog(endpoint: str, backlog: int = LISTEN_BACKLOG) -> str:
    """``endpoint`` with ``:backlog=N`` added if its kind takes one and it names none.

    Other kinds (``systemd:`` sockets, whose backlog systemd set, or plugins) are returned
    unchanged.
    """
    parts = _UNESCAPED_COLON.split(endpoint)
    if parts[0].strip().lower() not in _TAKES_BACKLOG or len(parts) < 2:
        return endpoint
    if any(part.startswith("backlog=") for part in parts[1:]):
        return endpoint
    return f"{endpoint}:backlog={backlog}"


class ListeningService(Service):
    """Listens on ``endpoint`` with ``factory`` while running (module docstring)."""

    def __init__(self, endpoint: IStreamServerEndpoint, factory: Any) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self._listening: Deferred[IListeningPort] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        failed: list[Failure] = []
        at_once = True

        def listen_failed(failure: Failure) -> None:
            if at_once:
                failed.append(failure)
            elif not failure.check(CancelledError):
                log.error("cannot listen on {endpoint}: {error}", endpoint=self.endpoint,
                          error=failure.getErrorMessage())

        self._listening = self.endpoint.listen(self.factory)
        self._listening.addErrback(listen_failed)
        at_once = False
        if failed:
            self._listening = None
            failed[0].raiseException()

    def startService(self) -> None:
        super().startService()
        if self._listening is None:
            self.privilegedStartService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        listening, self._listening = self._listening, None
        if listening is None:
            return succeed(None)
        listening.cancel()

        def stop(port: IListeningPort | None) -> Any:
            return port.stopListening() if port is not None else None

        return listening.addCallback(stop)
