"""The listen backlog llamaswap adds to endpoint strings that name none; ``ListeningService``:
listening while running, a listen error raised at start, stopping that stops listening or
cancels a listen under way."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol

from llamaswap.listening import LISTEN_BACKLOG, ListeningService, with_backlog


@pytest.mark.parametrize("endpoint", ["tcp:8080", "tcp:8080:interface=127.0.0.1", "tcp6:8080",
                                      "unix:/run/llamaswap.sock", "TCP:8080"])
def test_a_stream_endpoint_gets_the_burst_sized_backlog(endpoint: str) -> None:
    assert with_backlog(endpoint) == f"{endpoint}:backlog={LISTEN_BACKLOG}"


@pytest.mark.parametrize("endpoint", ["tcp:8080:backlog=5", "tcp:backlog=5:8080",
                                      "unix:/run/a\\:b:backlog=5",
                                      "systemd:domain=INET:index=0", "tcp"])
def test_an_explicit_backlog_and_other_kinds_are_left_alone(endpoint: str) -> None:
    assert with_backlog(endpoint) == endpoint


def test_an_escaped_colon_is_part_of_the_path() -> None:
    path = "unix:/run/a\\:backlog=5"
    assert with_backlog(path) == f"{path}:backlog={LISTEN_BACKLOG}"


def test_twisted_parses_the_result_and_the_kernel_gets_the_backlog() -> None:
    """The amended string is a valid endpoint whose listener takes a burst of connections
    it has not accepted yet (a backlog of 50 would refuse the ones past it)."""
    endpoint = serverFromString(reactor, with_backlog("tcp:0:interface=127.0.0.1"))
    listening: list[Any] = []
    endpoint.listen(_Silent()).addCallback(listening.append)
    port = listening[0]
    try:
        address = port.getHost()
        waiting: list[socket.socket] = []
        for _ in range(200):  # never accepted: the reactor does not run here
            client = socket.socket()
            client.setblocking(False)
            waiting.append(client)
            client.connect_ex((address.host, address.port))
        connected = 0
        for client in waiting:
            try:
                client.getpeername()
                connected += 1
            except OSError:
                pass
        assert connected == 200
    finally:
        for client in waiting:
            client.close()
        port.stopListening()


class _Silent:
    """A factory that is never asked for a protocol (nothing is accepted)."""

    def doStart(self) -> None: ...

    def doStop(self) -> None: ...


# -- ListeningService ---

class FakePort:
    stopped = False

    def stopListening(self) -> None:
        self.stopped = True


class Endpoint:
    """Answers ``listen`` with the Deferred it is given, recording the factory."""

    def __init__(self, answer: Deferred[Any]) -> None:
        self.answer = answer
        self.factories: list[Any] = []

    def listen(self, factory: Any) -> Deferred[Any]:
        self.factories.append(factory)
        return self.answer


FACTORY = Factory.forProtocol(Protocol)


def test_listens_once_on_privileged_start_and_stops_listening() -> None:
    port = FakePort()
    endpoint = Endpoint(succeed(port))
    service = ListeningService(endpoint, FACTORY)  # type: ignore[arg-type]
    service.privilegedStartService()
    service.startService()
    assert endpoint.factories == [FACTORY] and service.running
    stopped: list[object] = []
    service.stopService().addCallback(stopped.append)
    assert port.stopped and stopped == [None] and not service.running


def test_a_port_that_cannot_be_bound_fails_the_start() -> None:
    error = CannotListenError("127.0.0.1", 80, OSError("Address already in use"))
    service = ListeningService(Endpoint(fail(error)), FACTORY)  # type: ignore[arg-type]
    with pytest.raises(CannotListenError, match="Address already in use"):
        service.startService()


def test_stopping_while_the_listen_is_under_way_cancels_it() -> None:
    cancelled: list[object] = []
    pending: Deferred[Any] = Deferred(cancelled.append)
    service = ListeningService(Endpoint(pending), FACTORY)  # type: ignore[arg-type]
    service.startService()
    outcome: list[object] = []
    service.stopService().addBoth(outcome.append)
    assert cancelled == [pending]
    assert outcome == [None]  # the cancelled listen ends the stop cleanly


def test_a_listen_failing_later_is_logged_not_raised() -> None:
    from twisted.logger import globalLogPublisher

    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)  # type: ignore[arg-type]
    try:
        pending: Deferred[Any] = Deferred()
        service = ListeningService(Endpoint(pending), FACTORY)  # type: ignore[arg-type]
        service.startService()
        pending.errback(CannotListenError("::", 1, OSError("late")))
    finally:
        globalLogPublisher.removeObserver(seen.append)  # type: ignore[arg-type]
    assert any("cannot listen" in e.get("log_format", "") for e in seen)
