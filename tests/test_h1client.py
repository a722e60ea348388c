"""``llamaswap.web.h1client``: the data path's HTTP/1.1 client, on in-memory transports."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH

from llamaswap.web.h1client import (
    BadResponse,
    ChunkedDecoder,
    H1Client,
    H1Connection,
    H1Pool,
    UpstreamError,
    UpstreamResponse,
)
from llamaswap.web.unanswered import unanswered


class Body(Protocol):
    """Collects a response body: the pieces as delivered, and how it ended."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.ended: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.pieces.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.ended = reason


class Harness:
    """One connection on a ``StringTransport``, noting when it goes idle or is lost."""

    def __init__(self) -> None:
        self.idle: list[H1Connection] = []
        self.lost: list[H1Connection] = []
        self.connection = H1Connection(self.idle.append, self.lost.append)
        self.transport = StringTransport()
        self.connection.makeConnection(self.transport)

    def send(self, method: bytes = b"POST", body: Any = b"{}",
             headers: Headers | None = None) -> Deferred[UpstreamResponse]:
        return self.connection.send(method, b"/v1/chat/completions", b"127.0.0.1:8081",
                                    headers or Headers({b"content-type": [b"application/json"]}),
                                    body)

    def answer(self, data: bytes) -> None:
        self.connection.dataReceived(data)


def head_of(d: Deferred[UpstreamResponse]) -> UpstreamResponse:
    results: list[Any] = []
    d.addBoth(results.append)
    assert len(results) == 1 and isinstance(results[0], UpstreamResponse), results
    return results[0]


def failure_of(d: Deferred[Any]) -> Failure:
    results: list[Any] = []
    d.addBoth(results.append)
    assert len(results) == 1 and isinstance(results[0], Failure), results
    return results[0]


OK_JSON = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n"


def test_the_request_goes_out_in_one_write_with_host_and_length() -> None:
    h = Harness()
    h.send(headers=Headers({b"content-type": [b"application/json"],
                            b"content-length": [b"999"], b"transfer-encoding": [b"gzip"]}))
    assert h.transport.value() == (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")


def test_a_host_header_from_the_caller_wins_and_bodyless_posts_say_length_0() -> None:
    h = Harness()
    h.send(body=None, headers=Headers({b"host": [b"models.example"]}))
    assert h.transport.value() == (b"POST /v1/chat/completions HTTP/1.1\r\n"
                                   b"Host: models.example\r\nContent-Length: 0\r\n\r\n")


def test_a_sized_response_is_delivered_and_the_connection_goes_back_idle() -> None:
    h = Harness()
    d = h.send()
    h.answer(OK_JSON + b'{"a"')
    response = head_of(d)
    assert (response.code, response.phrase, response.length) == (200, b"OK", 10)
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    body = Body()
    response.deliverBody(body)
    assert body.pieces == [b'{"a"'] and body.ended is None
    h.answer(b': "b"}')
    assert body.pieces == [b'{"a"', b': "b"}']
    assert body.ended is not None and body.ended.check(ResponseDone)
    assert h.idle == [h.connection] and h.connection.state == "idle"
    assert not h.transport.disconnecting


def test_chunks_are_decoded_and_all_the_chunks_of_one_read_arrive_as_one_piece() -> None:
    h = Harness()
    d = h.send()
    h.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
             b"Content-Type: text/event-stream\r\n\r\n")
    response = head_of(d)
    assert response.length is UNKNOWN_LENGTH
    body = Body()
    response.deliverBody(body)
    h.answer(b"6\r\ndata: \r\n3;ext=1\r\nabc\r\n2\r\n\n\n\r\n")
    assert body.pieces == [b"data: abc\n\n"]
    h.answer(b"0\r\nX-Trailer: t\r\n\r\n")
    assert body.ended is not None and body.ended.check(ResponseDone)
    assert h.idle == [h.connection]


@pytest.mark.parametrize("step", [1, 2, 3, 7])
def test_the_chunked_decoder_does_not_depend_on_how_the_stream_is_cut(step: int) -> None:
    stream = b"5\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\n\r\nNEXT"
    decoder = ChunkedDecoder()
    payload, leftover = b"", None
    for at in range(0, len(stream), step):
        pieces, leftover = decoder.feed(stream[at:at + step])
        payload += b"".join(pieces)
        if leftover is not None:
            leftover += stream[at + step:]
            break
    assert payload == b"hello" + b"z" * 26
    assert leftover == b"NEXT"


@pytest.mark.parametrize("bad", [b"zz\r\n", b"0x5\r\nhello\r\n", b"1_0\r\n", b"-1\r\n",
                                 b"3\r\nabcXY", b"9" * 5000])
def test_broken_chunk_framing_fails_the_body_and_drops_the_connection(bad: bytes) -> None:
    h = Harness()
    d = h.send()
    h.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    body = Body()
    head_of(d).deliverBody(body)
    h.answer(bad)
    assert body.ended is not None and body.ended.check(BadResponse)
    assert h.transport.disconnecting and h.idle == []


def test_interim_answers_are_skipped_and_bodyless_answers_end_at_once() -> None:
    h = Harness()
    d = h.send()
    h.answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    response = head_of(d)
    assert response.code == 204
    body = Body()
    response.deliverBody(body)
    assert body.pieces == [] and body.ended is not None and body.ended.check(ResponseDone)
    assert h.idle == [h.connection]
    head = Harness()
    d = head.send(method=b"HEAD", body=None)
    head.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    body = Body()
    head_of(d).deliverBody(body)
    assert body.ended is not None and body.ended.check(ResponseDone)
    assert head.idle == [head.connection]


@pytest.mark.parametrize("answer, why", [
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "101"),
    (b"ICY 200 OK\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "bad header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"x" * 70000, "response head over"),
])
def test_malformed_answers_fail_the_request_and_close_the_connection(answer: bytes,
                                                                      why: str) -> None:
    h = Harness()
    d = h.send()
    h.answer(answer)
    failure = failure_of(d)
    assert failure.check(BadResponse) and why in failure.getErrorMessage()
    assert h.transport.disconnecting and h.idle == []


def test_connection_close_and_http_1_0_answers_are_not_reused() -> None:
    h = Harness()
    d = h.send()
    h.answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    body = Body()
    head_of(d).deliverBody(body)
    assert body.pieces == [b"ok"] and body.ended is not None and body.ended.check(ResponseDone)
    assert h.idle == [] and h.transport.disconnecting
    old = Harness()
    d = old.send()
    old.answer(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
    body = Body()
    head_of(d).deliverBody(body)
    assert body.pieces == [b"until the end"] and body.ended is None
    old.connection.connectionLost(Failure(ConnectionResetError()))
    assert body.ended is not None and body.ended.check(PotentialDataLoss)
    assert old.idle == [] and old.lost == [old.connection]


def test_a_connection_lost_before_the_head_fails_the_request_with_the_reason() -> None:
    h = Harness()
    d = h.send()
    h.answer(b"HTTP/1.1 200 O")
    h.connection.connectionLost(Failure(ConnectionResetError("reset by peer")))
    failure = failure_of(d)
    assert failure.check(UpstreamError) and "reset by peer" in failure.getErrorMessage()
    assert h.lost == [h.connection]


def test_a_sized_body_cut_short_fails_the_body() -> None:
    h = Harness()
    d = h.send()
    h.answer(OK_JSON + b"{")
    body = Body()
    head_of(d).deliverBody(body)
    h.connection.connectionLost(Failure(ConnectionResetError()))
    assert body.ended is not None and body.ended.check(ConnectionResetError)


def test_cancelling_while_waiting_for_the_head_aborts_the_connection() -> None:
    h = Harness()
    d = h.send()
    d.cancel()
    assert failure_of(d).check(CancelledError)
    assert h.transport.disconnecting and h.connection.state == "closed"


def test_a_body_that_arrived_before_delivery_is_handed_over_whole() -> None:
    h = Harness()
    d = h.send()
    h.answer(OK_JSON + b'{"a": ')
    h.answer(b'"b"}')  # complete before anyone asked for the body
    assert h.idle == []  # not reused before its body was taken: it would get mixed up
    body = Body()
    head_of(d).deliverBody(body)
    assert body.pieces == [b'{"a": "b"}']
    assert body.ended is not None and body.ended.check(ResponseDone)
    assert h.idle == [h.connection] and h.connection.state == "idle"


def test_a_client_that_pauses_after_the_body_cannot_stall_the_pooled_connection() -> None:
    h = Harness()
    d = h.send()
    h.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
    body = Body()
    head_of(d).deliverBody(body)
    body.transport.pauseProducing()
    assert h.transport.producerState == "paused"
    h.answer(b"done")
    assert h.transport.producerState == "producing"  # resumed before going back idle
    body.transport.pauseProducing()  # a late pause from the client: no effect any more
    assert h.transport.producerState == "producing"


def test_a_client_that_leaves_aborts_the_upstream_connection() -> None:
    h = Harness()
    d = h.send()
    h.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    body = Body()
    head_of(d).deliverBody(body)
    body.transport.stopProducing()
    assert h.transport.disconnecting and h.idle == []


class Producer:
    """A request body producer writing ``parts`` when started."""

    def __init__(self, parts: list[bytes], length: Any) -> None:
        self.parts = parts
        self.length = length
        self.stopped = False

    def startProducing(self, consumer: Any) -> Deferred[None]:
        for part in self.parts:
            consumer.write(part)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.stopped = True


def test_a_body_of_unknown_length_is_sent_chunked() -> None:
    h = Harness()
    h.send(body=Producer([b"hello", b"", b" world"], UNKNOWN_LENGTH), headers=Headers())
    assert h.transport.value() == (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert h.transport.producer is None  # unregistered once done


def test_a_body_shorter_than_announced_fails_the_request() -> None:
    h = Harness()
    d = h.send(body=Producer([b"abc"], 10), headers=Headers())
    assert b"Content-Length: 10\r\n\r\nabc" in h.transport.value()
    failure = failure_of(d)
    assert failure.check(UpstreamError) and "3 bytes, not the 10" in failure.getErrorMessage()
    assert h.transport.disconnecting


class FakeEndpoint:
    def __init__(self) -> None:
        self.connections: list[tuple[H1Connection, StringTransport]] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)


def exchange(pool: H1Pool, endpoint: FakeEndpoint, key: str = "m") -> H1Connection:
    """One complete request and answer; returns the connection it used."""
    connection = head_of_connection(pool.connection(key, endpoint))  # type: ignore[arg-type]
    d = connection.send(b"GET", b"/", b"m", Headers(), None)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    head_of(d).deliverBody(Body())
    return connection


def head_of_connection(d: Deferred[H1Connection]) -> H1Connection:
    results: list[Any] = []
    d.addBoth(results.append)
    assert isinstance(results[0], H1Connection), results
    return results[0]


def test_the_pool_reuses_idle_connections_and_caps_how_many_it_keeps() -> None:
    clock = Clock()
    pool = H1Pool(clock, max_idle_per_origin=1)
    endpoint = FakeEndpoint()
    first = exchange(pool, endpoint)
    assert exchange(pool, endpoint) is first and len(endpoint.connections) == 1
    # two at once need two connections; only one may stay idle afterwards
    a = head_of_connection(pool.connection("m", endpoint))  # type: ignore[arg-type]
    b = head_of_connection(pool.connection("m", endpoint))  # type: ignore[arg-type]
    assert a is first and b is not first
    for connection in (a, b):
        d = connection.send(b"GET", b"/", b"m", Headers(), None)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        head_of(d).deliverBody(Body())
    assert pool.idle_count() == 1
    assert endpoint.connections[0][1].disconnecting  # the older idle one was closed


def test_idle_connections_expire_and_lost_ones_leave_the_pool() -> None:
    clock = Clock()
    pool = H1Pool(clock, idle_timeout=10)
    endpoint = FakeEndpoint()
    first = exchange(pool, endpoint)
    second = exchange(pool, endpoint, key="other")
    second.connectionLost(Failure(ConnectionResetError()))
    assert pool.idle_count() == 1
    clock.advance(10)
    assert endpoint.connections[0][1].disconnecting and first.state == "closed"


def test_closing_the_pool_waits_for_every_connection() -> None:
    pool = H1Pool(Clock())
    endpoint = FakeEndpoint()
    busy = head_of_connection(pool.connection("m", endpoint))  # type: ignore[arg-type]
    request = busy.send(b"GET", b"/", b"m", Headers(), None)
    idle = exchange(pool, endpoint)
    assert idle is not busy
    closed = pool.close()
    assert endpoint.connections[1][1].disconnecting and not closed.called
    assert not endpoint.connections[0][1].disconnecting  # a request in flight is not cut
    idle.connectionLost(Failure(ConnectionResetError()))
    assert not closed.called  # the busy one is still open
    busy.connectionLost(Failure(ConnectionResetError()))
    assert closed.called
    assert failure_of(request).check(UpstreamError)


def test_the_client_states_the_host_as_agent_would() -> None:
    class Endpoints:
        def endpointForURI(self, uri: Any) -> FakeEndpoint:
            return FakeEndpoint()

    client = H1Client(Clock(), Endpoints())  # type: ignore[arg-type]
    assert client._target("http://127.0.0.1:80/x?y=1")[2:] == (b"127.0.0.1", b"/x?y=1")
    assert client._target("http://[::1]:8080/v1")[2:] == (b"[::1]:8080", b"/v1")
    assert client._target("https://models.example/api")[2:] == (b"models.example", b"/api")
    with pytest.raises(UpstreamError):
        client._target("http://127.0.0.1:8080/a b")


@given(st.lists(st.binary(min_size=0, max_size=40), max_size=8), st.booleans())
def test_one_chunk_per_read_decodes_as_the_general_path_does(payloads: list[bytes],
                                                              extension: bool) -> None:
    """A read holding exactly one chunk takes a shortcut; chunks split or merged any other
    way take the general loop: both must agree, data containing CRLF included."""
    ext = b";x=1" if extension else b""
    chunks = [b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in payloads if p]
    whole = b"".join(chunks) + b"0\r\n\r\n"
    one_by_one, merged = ChunkedDecoder(), ChunkedDecoder()
    pieces: list[bytes] = []
    for chunk in chunks:
        got, rest = one_by_one.feed(chunk)
        assert rest is None
        pieces += got
    got, rest = one_by_one.feed(b"0\r\n\r\nnext")
    assert got == [] and rest == b"next"
    everything, rest = merged.feed(whole + b"next")
    assert b"".join(pieces) == b"".join(everything) == b"".join(payloads)
    assert rest == b"next"


def test_a_connection_closed_before_any_byte_of_an_answer_is_unanswered() -> None:
    h = Harness()
    d = h.send()
    h.connection.connectionLost(Failure(ConnectionResetError("reset by peer")))
    failure = failure_of(d)
    assert failure.check(UpstreamError)
    error = unanswered(failure.value)
    assert error is not None and error.sent  # the request went out: it may have been read


def test_a_connection_closed_after_part_of_an_answer_is_not_unanswered() -> None:
    h = Harness()
    d = h.send()
    h.answer(b"HTTP/1.1 200 O")
    h.connection.connectionLost(Failure(ConnectionResetError("reset by peer")))
    assert unanswered(failure_of(d).value) is None


def test_a_refused_connection_is_unanswered_and_nothing_was_sent() -> None:
    class Refusing:
        def connect(self, factory: Any) -> Deferred[Any]:
            return fail(ConnectionRefusedError("127.0.0.1:9: Connection refused"))

    class Endpoints:
        def endpointForURI(self, uri: Any) -> Refusing:
            return Refusing()

    client = H1Client(Clock(), Endpoints())  # type: ignore[arg-type]
    d = Deferred.fromCoroutine(client.request(b"POST", "http://127.0.0.1:9/x", Headers(), b""))
    failure = failure_of(d)
    assert failure.check(UpstreamError)
    error = unanswered(failure.value)
    assert error is not None and not error.sent
