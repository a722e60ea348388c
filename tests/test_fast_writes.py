"""Per-turn batched socket writes, on real loopback connections: every test runs with the
piece switched on (if its gate passed) and off, and must hold in both."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport

from llamaswap.web.fast import FastPath
from llamaswap.web.fast import writes as fastwrites
from llamaswap.web.fast.writes import TurnWrites

_MODES = {"on": FastPath.configure(True, environ={}), "off": FastPath.off()}
_mode = _MODES["on"]


@pytest.fixture(autouse=True, params=sorted(_MODES))
def fast_mode(request: pytest.FixtureRequest) -> FastPath:
    global _mode
    _mode = _MODES[request.param]
    return _mode


def _writes_on() -> bool:
    return "writes" in _mode.pieces


class Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.closed: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(self.data)


class CountingSocket:
    """Delegates to the real socket, counting ``send`` calls."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.sends: list[int] = []

    def send(self, data: Any) -> int:
        sent: int = self._real.send(data)
        self.sends.append(sent)
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


async def connected_pair() -> tuple[Any, Collect]:
    """A write-through client transport and the protocol receiving on the other end."""
    received: list[Collect] = []

    def build() -> Collect:
        received.append(Collect())
        return received[-1]

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(build))
    client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
        Factory.forProtocol(Protocol))
    while not received:
        await deferLater(reactor, 0.001)
    await port.stopListening()
    transport = client.transport
    assert _mode.write_through(transport) == _writes_on()
    assert isinstance(transport, TurnWrites) == _writes_on()
    return transport, received[0]


@pytest_twisted.ensureDeferred
async def test_writes_in_one_turn_go_out_in_one_send_without_epoll_registration() -> None:
    transport, peer = await connected_pair()
    counting = transport.socket = CountingSocket(transport.socket)
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.writeSequence([b"5\r\n", b"hello", b"\r\n"])
    transport.write(b"0\r\n\r\n")
    assert counting.sends == []  # nothing sent yet: batched until the turn ends
    # on: no writer registration; off: Twisted's own path registers the socket
    assert (transport in reactor.getWriters()) != _writes_on()
    await deferLater(reactor, 0)
    await deferLater(reactor, 0)
    if _writes_on():
        assert counting.sends == [len(b"HTTP/1.1 200 OK\r\n\r\n5\r\nhello\r\n0\r\n\r\n")]
    transport.loseConnection()
    assert await peer.closed == b"HTTP/1.1 200 OK\r\n\r\n5\r\nhello\r\n0\r\n\r\n"


@pytest_twisted.ensureDeferred
async def test_what_the_kernel_does_not_take_is_sent_by_twisted_in_order() -> None:
    transport, peer = await connected_pair()
    big = bytes(range(256)) * (32 * 1024)  # 8 MiB: far beyond a socket buffer
    transport.write(big)
    transport.write(b"tail")
    transport.loseConnection()
    received = await peer.closed
    assert len(received) == len(big) + 4 and received == big + b"tail"


@pytest_twisted.ensureDeferred
async def test_lose_connection_before_the_turn_ends_still_delivers_the_data() -> None:
    transport, peer = await connected_pair()
    transport.write(b"last words")
    transport.loseConnection()
    assert await peer.closed == b"last words"


@pytest_twisted.ensureDeferred
async def test_abort_connection_discards_batched_data() -> None:
    transport, peer = await connected_pair()
    transport.write(b"never")
    transport.abortConnection()
    assert await peer.closed == b""


def test_transports_that_are_not_plain_sockets_are_left_alone() -> None:
    transport = StringTransport()
    assert _mode.write_through(transport) is False
    assert not isinstance(transport, TurnWrites)


def test_writes_that_lose_data_fail_the_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    def drop(self: Any) -> None:
        self._in_turn = False
        self._tempDataBuffer, self._tempDataLen = [], 0

    monkeypatch.setattr(TurnWrites, "_flush_turn", drop)
    assert fastwrites._works() is False


@pytest_twisted.ensureDeferred
async def test_a_streaming_producer_is_paused_when_the_buffer_fills_and_resumed_once_sent() -> None:
    transport, peer = await connected_pair()
    calls: list[str] = []
    resumed: Deferred[None] = Deferred()

    class Producer:
        def pauseProducing(self) -> None:
            calls.append("pause")

        def resumeProducing(self) -> None:
            calls.append("resume")
            if not resumed.called:
                resumed.callback(None)

        def stopProducing(self) -> None:
            calls.append("stop")

    transport.registerProducer(Producer(), True)
    transport.write(b"x" * (transport.bufferSize + 1))  # past Twisted's buffer limit
    assert calls == ["pause"]
    await resumed
    assert calls == ["pause", "resume"]
    transport.unregisterProducer()
    transport.loseConnection()
    assert len(await peer.closed) == transport.bufferSize + 1
