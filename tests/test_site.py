"""``HardenedSite``: header deadline, minimum body rate, idle keep-alive, on a ``Clock``."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from llamaswap.config import parse_config
from llamaswap.service import AccessLoggedRequest, LlamaSwapService
from llamaswap.web import site as site_module
from llamaswap.web.limits import LimitedRequest
from llamaswap.web.site import HardenedSite

TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout"


class _Echo(Resource):
    """Answers GET with ``ok``, POST with the body length; ``/hold`` never answers."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Request] = []

    def render_GET(self, request: Request) -> bytes | int:
        if request.path == b"/hold":
            self.held.append(request)
            return NOT_DONE_YET
        return b"ok"

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        return str(len(request.content.read())).encode()


def connect(clock: Clock, **kw: Any) -> tuple[Any, StringTransport, _Echo]:
    resource = _Echo()
    site = HardenedSite(resource, reactor=clock, **kw)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport, resource


def trickle(channel: Any, clock: Clock, data: bytes, every: float) -> None:
    for byte in data:
        channel.dataReceived(bytes([byte]))
        clock.advance(every)


def test_slowloris_headers_are_cut_at_the_deadline_though_every_byte_resets_idle() -> None:
    clock = Clock()
    channel, transport, _ = connect(clock, header_timeout=30, idle_timeout=5)
    # One byte a second: the idle timeout (5 s) alone would never fire.
    head = b"GET / HTTP/1.1\r\nX-Pad: abcdef"
    assert len(head) == 29
    trickle(channel, clock, head, every=1.0)  # 29 s since the first byte
    assert not transport.disconnecting
    assert transport.value() == b""
    trickle(channel, clock, b"n", every=1.0)  # 30 s
    assert transport.disconnecting
    assert transport.value().startswith(TIMEOUT_408)
    body = json.loads(transport.value().partition(b"\r\n\r\n")[2])  # in the envelope
    assert body["error"]["message"] == "the request headers did not arrive in time"
    channel.dataReceived(b"\r\n\r\n")  # too late: nothing is served
    assert b"ok" not in transport.value()


def test_headers_in_time_are_served_and_the_deadline_is_gone() -> None:
    clock = Clock()
    channel, transport, _ = connect(clock, header_timeout=30)
    trickle(channel, clock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", every=1.0)  # 27 s
    assert transport.value().endswith(b"ok")
    clock.advance(20)  # past the first request's header deadline
    assert not transport.disconnecting


def test_keep_alive_requests_each_get_their_own_header_deadline() -> None:
    clock = Clock()
    channel, transport, _ = connect(clock, header_timeout=5, idle_timeout=100)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(50)  # idle between requests: not a header deadline
    assert not transport.disconnecting
    channel.dataReceived(b"GET / HTTP/1.1\r\n")
    clock.advance(4.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting
    assert transport.value().count(b"ok") == 1
    assert TIMEOUT_408 in transport.value()


def test_pipelined_request_replayed_after_the_first_starts_its_own_deadline() -> None:
    clock = Clock()
    channel, transport, resource = connect(clock, header_timeout=5)
    channel.dataReceived(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n")
    clock.advance(60)  # the first request is being answered: no deadline runs
    assert not transport.disconnecting
    resource.held[0].finish()  # the buffered, incomplete second request is replayed now
    clock.advance(5.1)
    assert transport.disconnecting
    assert TIMEOUT_408 in transport.value()


def test_idle_keep_alive_connection_times_out() -> None:
    clock = Clock()
    channel, transport, _ = connect(clock, idle_timeout=60)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(59)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting
    assert TIMEOUT_408 not in transport.value()  # a clean close, not an error


def test_a_long_answer_is_never_cut_by_any_deadline() -> None:
    clock = Clock()
    channel, transport, resource = connect(clock, header_timeout=1, body_timeout=1,
                                           idle_timeout=1)
    channel.dataReceived(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(3600)
    assert not transport.disconnecting
    resource.held[0].write(b"late")
    resource.held[0].finish()
    assert transport.value().endswith(b"late\r\n0\r\n\r\n")


def test_slow_body_is_cut_after_grace_plus_size_over_min_rate() -> None:
    clock = Clock()
    channel, transport, _ = connect(clock, body_timeout=10, min_body_rate=100)
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
    # 10 bytes/s against a minimum of 100 bytes/s: due at 10 s + 50 bytes / 100 = 10.5 s.
    trickle(channel, clock, b"x" * 10, every=0.1)
    for _ in range(9):
        trickle(channel, clock, b"x" * 5, every=0.1)
        clock.advance(0.5)
    assert not transport.disconnecting  # 10 s: inside the grace, and 55 bytes earned 0.55 s
    clock.advance(0.6)
    assert transport.disconnecting
    assert transport.value().startswith(TIMEOUT_408)


def test_body_at_the_minimum_rate_is_accepted_however_long() -> None:
    clock = Clock()
    channel, transport, _ = connect(clock, body_timeout=5, min_body_rate=100)
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6000\r\n\r\n")
    for _ in range(60):  # 100 bytes/s for 60 s: far beyond the 5 s grace
        channel.dataReceived(b"y" * 100)
        clock.advance(1.0)
        assert not transport.disconnecting
    assert transport.value().endswith(b"6000")


def test_an_early_413_closes_at_once_and_no_408_follows() -> None:
    clock = Clock()
    resource = _Echo()
    resource.max_request_size = 10  # type: ignore[attr-defined]  # read by web/limits.py
    site = HardenedSite(resource, reactor=clock, body_timeout=5)
    site.requestFactory = LimitedRequest
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 413")
    assert b"Connection: close" in transport.value()
    assert transport.disconnecting  # at once, not after the body deadline
    clock.advance(6)
    assert TIMEOUT_408 not in transport.value()


def test_a_client_that_does_not_read_the_408_is_aborted() -> None:
    clock = Clock()
    channel, transport, _ = connect(clock, header_timeout=1)
    channel.dataReceived(b"GET")
    clock.advance(1)
    assert transport.disconnecting and not transport.disconnected
    clock.advance(channel.abortTimeout)
    assert transport.disconnected  # StringTransport.abortConnection


def test_keep_alive_traffic_pushes_the_idle_timeout_back() -> None:
    clock = Clock()
    channel, transport, _ = connect(clock, idle_timeout=10)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(5)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # idle again from 5 s
    clock.advance(9.9)  # past the first request's idle time, which must not fire
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting
    assert transport.value().count(b"ok") == 2


def test_partial_data_pushes_the_idle_timeout_back() -> None:
    clock = Clock()
    channel, transport, _ = connect(clock, idle_timeout=10, header_timeout=100)
    channel.dataReceived(b"GET / HTTP/1.1\r\n")
    clock.advance(8)
    channel.dataReceived(b"Host: x\r\n")  # data: idle from 8 s
    clock.advance(9)
    assert not transport.disconnecting
    clock.advance(1.1)
    assert transport.disconnecting
    assert TIMEOUT_408 not in transport.value()  # the idle timeout, not the header deadline


def test_whole_requests_set_no_timers() -> None:
    clock = Clock()
    channel, transport, _ = connect(clock)
    scheduled: list[float] = []
    call_later = clock.callLater

    def counting(delay: float, *args: Any, **kw: Any) -> Any:
        scheduled.append(delay)
        return call_later(delay, *args, **kw)

    clock.callLater = counting  # type: ignore[method-assign]
    for _ in range(20):
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
    assert transport.value().count(b"HTTP/1.1 200") == 20
    assert scheduled == []
    assert len(clock.getDelayedCalls()) == 1  # the idle timeout, set once per connection
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\na")
    assert scheduled == [30.0]  # an incomplete body: its deadline is armed


def test_a_closed_connection_leaves_no_timer_behind() -> None:
    clock = Clock()
    channel, _, _ = connect(clock)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    channel.dataReceived(b"GET / HT")
    assert len(clock.getDelayedCalls()) == 2  # idle timeout, header deadline
    channel.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []


def test_a_slow_body_is_logged_as_a_slow_body(monkeypatch: Any) -> None:
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(site_module, "log", Logger(observer=events.append))  # type: ignore[arg-type]
    clock = Clock()
    channel, transport, _ = connect(clock, header_timeout=5, body_timeout=5)
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    clock.advance(5.1)
    assert transport.value().startswith(TIMEOUT_408)
    assert [e["what"] for e in events] == ["request body"]
    events.clear()
    channel, transport, _ = connect(clock, header_timeout=5)
    channel.dataReceived(b"POST / HTTP/1.1\r\n")
    clock.advance(5.1)
    assert [e["what"] for e in events] == ["request headers"]


def test_channel_caches_addresses_for_every_request_of_a_connection() -> None:
    clock = Clock()
    channel, transport, _ = connect(clock)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
    assert channel.getHost() is channel.getHost()
    assert channel.getHost() == transport.getHost()
    assert channel.getPeer() == transport.getPeer()


def test_service_site_is_hardened_and_keeps_the_access_log() -> None:
    config = parse_config("models:\n  m:\n    cmd: x --port ${PORT}\n", "c.yaml")
    site = LlamaSwapService(config, Clock()).site()
    assert isinstance(site, HardenedSite)
    assert site.requestFactory is AccessLoggedRequest
    assert site.timeOut == 60 and site.header_timeout == 30


class _Trickler(Protocol):
    """Sends one byte every 50 ms, forever; records what the server said and when it hung up."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[float] = Deferred()
        self.started = 0.0
        self._call: Any = None

    def connectionMade(self) -> None:
        self.started = reactor.seconds()
        self._send()

    def _send(self) -> None:
        self.transport.write(b"X")  # type: ignore[union-attr]
        self._call = reactor.callLater(0.05, self._send)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self.closed.callback(reactor.seconds() - self.started)


@pytest_twisted.ensureDeferred
async def test_real_socket_slowloris_is_disconnected() -> None:
    site: Any = HardenedSite(_Echo(), header_timeout=0.5, idle_timeout=0.2)
    port: Any = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        factory: Any = ClientFactory()
        trickler: Any = None

        def build(addr: Any) -> _Trickler:
            nonlocal trickler
            trickler = _Trickler()
            return trickler

        factory.buildProtocol = build
        reactor.connectTCP("127.0.0.1", port.getHost().port, factory)
        elapsed = await _within(_closed(lambda: trickler), 5.0)
        assert 0.45 <= elapsed < 2.0, elapsed
        assert trickler.received.startswith(TIMEOUT_408)
        # The server still serves well-behaved clients afterwards.
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = await _read_all_in_thread(s)
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"ok")
    finally:
        await port.stopListening()


async def _closed(get: Any) -> float:
    while get() is None:
        await _sleep(0.01)
    return float(await get().closed)


async def _within(coro: Any, seconds: float) -> Any:
    d = Deferred.fromCoroutine(coro)
    d.addTimeout(seconds, reactor)
    return await d


async def _sleep(seconds: float) -> None:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    await d


async def _read_all_in_thread(s: socket.socket) -> bytes:
    from twisted.internet.threads import deferToThread

    def read() -> bytes:
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)

    return await deferToThread(read)
