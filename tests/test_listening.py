"""The listen backlog llamaswap adds to endpoint strings that name none."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString

from llamaswap.listening import LISTEN_BACKLOG, with_backlog


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
