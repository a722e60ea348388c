"""``web/strict.py``: malformed heads are answered at once, in the envelope, and refused
connections close cleanly. In memory (a head whole in one read, and in pieces), then on
loopback sockets for what only a socket shows."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from llamaswap.web.limits import LimitedRequest
from llamaswap.web.site import HardenedSite
from llamaswap.web.strict import LINGER_IDLE, LINGER_MAX


class _Recorder(Resource):
    """Answers ``ok`` and records what each request looked like."""

    isLeaf = True
    max_request_size = 1000  # read by web/limits.py

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bytes, bytes, list[bytes]]] = []

    def render(self, request: Request) -> bytes:
        self.seen.append((request.method, request.uri,
                          request.requestHeaders.getRawHeaders(b"host", [])))
        return b"ok"


class _Conn:
    def __init__(self, **kw: Any) -> None:
        self.clock = Clock()
        self.resource = _Recorder()
        site = HardenedSite(self.resource, reactor=self.clock, **kw)
        site.requestFactory = LimitedRequest
        self.channel: Any = site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes, pieces: bool) -> None:
        if pieces:
            for byte in data:
                self.channel.dataReceived(bytes([byte]))
        else:
            self.channel.dataReceived(data)

    @property
    def written(self) -> bytes:
        return self.transport.value()


def answer(written: bytes) -> tuple[int, dict[bytes, bytes], Any]:
    head, _, body = written.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers[b"content-length"]) == len(body)
    return int(lines[0].split()[1]), headers, json.loads(body)


def assert_refused(conn: _Conn, status: int, code: str | None = None) -> dict[str, Any]:
    """Answered ``status`` in the envelope, closing, nothing served."""
    got, headers, body = answer(conn.written)
    assert got == status, conn.written
    assert headers[b"connection"] == b"close"
    assert body["src"] == "llamaswap"
    if code is not None:
        assert body["error"]["code"] == code
    assert conn.transport.disconnecting  # at once: no clock was advanced
    assert conn.resource.seen == []
    return dict(body["error"])


both_parsers = pytest.mark.parametrize("pieces", [False, True], ids=["whole", "in-pieces"])


# -- item 5: overlong heads -------------------------------------------------------------------


@both_parsers
def test_a_request_line_over_16_kib_is_414(pieces: bool) -> None:
    conn = _Conn()
    conn.send(b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", pieces)
    assert_refused(conn, 414, "uri_too_long")


@both_parsers
def test_a_header_over_16_kib_is_431(pieces: bool) -> None:
    conn = _Conn()
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 17000 + b"\r\n\r\n", pieces)
    assert_refused(conn, 431, "request_header_fields_too_large")


@both_parsers
def test_headers_over_16_kib_together_are_431(pieces: bool) -> None:
    conn = _Conn()
    headers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 5000) for i in range(4))
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n", pieces)
    assert_refused(conn, 431)


def test_more_than_500_headers_are_431() -> None:
    conn = _Conn()
    conn.send(b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * 501 + b"\r\n", False)
    assert "500 header fields" in assert_refused(conn, 431)["message"]


def test_an_overlong_line_without_any_crlf_is_answered_too() -> None:
    conn = _Conn()
    conn.send(b"GET /" + b"a" * 20000, False)  # the line never ends
    assert_refused(conn, 414)


# -- item 8: bare line endings and chunk sizes, refused at once -------------------------------


@both_parsers
@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\nHost: x\n\n",
    b"GET / HTTP/1.1\r\nHost: x\n\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb",
])
def test_bare_line_endings_are_400_without_waiting(data: bytes, pieces: bool) -> None:
    conn = _Conn(header_timeout=30)
    conn.send(data, pieces)
    assert "CRLF" in assert_refused(conn, 400)["message"]


def test_a_bare_lf_after_a_pipelined_request_is_refused_after_that_request() -> None:
    conn = _Conn()
    conn.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\nHost: x\n\n", False)
    assert conn.resource.seen == [(b"GET", b"/first", [b"x"])]
    assert conn.written.startswith(b"HTTP/1.1 200")
    assert b"HTTP/1.1 400 Bad Request" in conn.written and conn.transport.disconnecting


@both_parsers
def test_an_absurd_chunk_size_is_400_at_once(pieces: bool) -> None:
    conn = _Conn(body_timeout=30)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"FFFFFFFFFFFFFFFFFFFF\r\nabc", pieces)
    assert "chunk size" in assert_refused(conn, 400)["message"]


@both_parsers
def test_a_chunk_larger_than_the_request_limit_is_413_at_once(pieces: bool) -> None:
    conn = _Conn(body_timeout=30)
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"FFFFFFFF\r\nabc", pieces)  # 4 GiB announced, the limit is 1000 bytes
    assert_refused(conn, 413, "request_too_large")


def test_chunks_within_the_limit_are_served() -> None:
    conn = _Conn()
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"200\r\n" + b"a" * 512 + b"\r\n0\r\n\r\n", False)
    assert conn.written.startswith(b"HTTP/1.1 200") and not conn.transport.disconnecting


def test_a_malformed_chunk_gets_the_envelope() -> None:
    conn = _Conn()
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", False)
    assert_refused(conn, 400)


@both_parsers
def test_an_early_413_closes_at_once(pieces: bool) -> None:
    conn = _Conn(body_timeout=30)
    conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
              pieces)
    assert_refused(conn, 413)
    conn.send(b"x" * 5000, False)  # what follows is dropped
    assert conn.resource.seen == []


# -- item 9: Host and absolute-form targets ---------------------------------------------------


@both_parsers
def test_two_host_headers_are_400(pieces: bool) -> None:
    conn = _Conn()
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", pieces)
    assert "Host" in assert_refused(conn, 400)["message"]


@both_parsers
def test_an_absolute_form_target_is_served_as_its_path(pieces: bool) -> None:
    conn = _Conn()
    conn.send(b"GET http://models.example:8080/health?x=1 HTTP/1.1\r\nHost: other\r\n\r\n",
              pieces)
    assert conn.written.startswith(b"HTTP/1.1 200")
    assert conn.resource.seen == [(b"GET", b"/health?x=1", [b"models.example:8080"])]


@both_parsers
def test_targets_that_are_not_paths_are_400(pieces: bool) -> None:
    conn = _Conn()
    conn.send(b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example\r\n\r\n", pieces)
    assert_refused(conn, 400)


# -- twisted.web's own refusals, and how a refused connection ends ------------------------------


@both_parsers
@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
])
def test_twisted_webs_refusals_get_the_envelope(data: bytes, pieces: bool) -> None:
    conn = _Conn()
    conn.send(data, pieces)
    assert_refused(conn, 400, "bad_request")


def test_anthropic_paths_get_anthropics_shape() -> None:
    conn = _Conn()
    conn.send(b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", False)
    _, _, body = answer(conn.written)
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


class _HalfClosable(StringTransport):
    """A transport that can shut its write side only, as TCP's can."""

    write_closed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def _refused_half_closable() -> tuple[_Conn, _HalfClosable]:
    conn = _Conn()
    transport = _HalfClosable()
    conn.channel.makeConnection(transport)
    conn.channel.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400")
    assert transport.write_closed and not transport.disconnecting
    return conn, transport


def test_a_refused_connection_shuts_writing_reads_on_then_aborts_when_idle() -> None:
    conn, transport = _refused_half_closable()
    conn.clock.advance(LINGER_IDLE - 0.5)
    conn.channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # dropped, not served
    assert transport.value().count(b"HTTP/1.1") == 1 and conn.resource.seen == []
    conn.clock.advance(LINGER_IDLE - 0.1)  # the client sent something: it gets more time
    assert not transport.aborted
    conn.clock.advance(0.2)
    assert transport.aborted


def test_a_client_that_never_stops_sending_is_aborted_at_the_linger_maximum() -> None:
    conn, transport = _refused_half_closable()
    for _ in range(int(LINGER_MAX / (LINGER_IDLE / 2)) - 1):
        conn.clock.advance(LINGER_IDLE / 2)
        conn.channel.dataReceived(b"x" * 1000)
    assert not transport.aborted
    conn.clock.advance(LINGER_IDLE / 2 + 0.01)
    assert transport.aborted


def test_a_client_that_closes_during_the_linger_leaves_no_timer() -> None:
    conn = _Conn()
    transport = _HalfClosable()
    conn.channel.makeConnection(transport)
    conn.channel.dataReceived(b"GET / HTTP/1.1\nHost: x\n\n")
    assert conn.clock.getDelayedCalls()
    conn.channel.connectionLost(None)
    assert not [c for c in conn.clock.getDelayedCalls() if c.active()]


# -- on loopback: the answer is really written before the connection closes -------------------


def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, read until the server closes (a hang fails by the socket timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def loopback_port() -> Any:
    # Deadlines far beyond the socket timeout: an answer can only come from a refusal.
    resource = _Recorder()
    site = HardenedSite(resource, header_timeout=120, body_timeout=120, idle_timeout=120)
    site.requestFactory = LimitedRequest
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    yield port.getHost().port
    port.stopListening()


@pytest.mark.parametrize(("data", "status"), [
    (b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"FFFFFFFFFFFFFFFFFFFF\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 99999\r\n\r\n", 413),
])
@pytest_twisted.ensureDeferred
async def test_on_a_socket_the_answer_arrives_and_then_the_end(
        loopback_port: int, data: bytes, status: int) -> None:
    reply = await deferToThread(_exchange, loopback_port, data)
    got, headers, body = answer(reply)
    assert got == status and body["src"] == "llamaswap"
    # The server still serves.
    reply = await deferToThread(_exchange, loopback_port,
                                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"ok")


@pytest_twisted.ensureDeferred
async def test_on_a_socket_an_upload_cut_by_413_still_gets_its_answer(
        loopback_port: int) -> None:
    """The client is still sending when the 413 comes: the answer must not be lost to a
    connection reset (the server reads and drops the rest while it lingers)."""

    def upload() -> bytes:
        with socket.create_connection(("127.0.0.1", loopback_port), timeout=20) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n\r\n")
            try:
                s.sendall(b"u" * 3_000_000)
            except OSError:
                pass  # the server may have closed meanwhile
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    reply = await deferToThread(upload)
    assert answer(reply)[0] == 413


def test_an_early_413_to_an_expect_100_continue_sends_no_continue() -> None:
    conn = _Conn()
    transport = _HalfClosable()
    conn.channel.makeConnection(transport)
    conn.channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                              b"Content-Length: 5000\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 413")
    assert b"100 Continue" not in transport.value() and transport.write_closed


class _Holder(Resource):
    """Holds every request open until the test finishes it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Request] = []

    def render(self, request: Request) -> Any:
        self.held.append(request)
        return NOT_DONE_YET


def test_a_refusal_behind_a_request_being_answered_waits_for_its_answer() -> None:
    holder = _Holder()
    site = HardenedSite(holder, reactor=Clock())
    channel: Any = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /v1/messages HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /v1/messages HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert len(holder.held) == 1 and transport.value() == b""  # no answer out of order
    holder.held[0].write(b"first")
    holder.held[0].finish()
    first, _, second = transport.value().partition(b"first\r\n0\r\n\r\n")  # (chunked)
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 400")
    _, _, body = answer(second)
    assert body["type"] == "error"  # the refused request's own API shape (Anthropic)
    assert len(holder.held) == 1 and transport.disconnecting
