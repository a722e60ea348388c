"""``llamaswap.upstream``: the one HTTP/1.1 client to model servers, on in-memory transports."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH

from llamaswap.config.model import Timeouts
from llamaswap.upstream import (
    BadResponse,
    ConnectionPool,
    NoAnswer,
    ResponseHeaderTimeout,
    UpstreamClient,
    UpstreamConnection,
    UpstreamError,
    UpstreamResponse,
    may_retry_stale,
    read_body,
)
from llamaswap.upstream.connect import CONNECT_TIMEOUT, NO_CONNECT_LIMIT
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
        self.idle: list[UpstreamConnection] = []
        self.lost: list[UpstreamConnection] = []
        self.connection = UpstreamConnection(self.idle.append, self.lost.append)
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


def chunked_body(stream: bytes, cuts: list[int]) -> tuple[Harness, Body]:
    """A chunked answer whose body arrives as ``stream`` cut at ``cuts``."""
    h = Harness()
    d = h.send()
    h.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    body = Body()
    head_of(d).deliverBody(body)
    start = 0
    for at in sorted(set(cuts)) + [len(stream)]:
        if at > start:
            h.answer(stream[start:at])
            start = at
    return h, body


@pytest.mark.parametrize("step", [1, 2, 3, 7])
def test_chunked_decoding_does_not_depend_on_how_the_stream_is_cut(step: int) -> None:
    stream = b"5\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: t\r\n\r\n"
    h, body = chunked_body(stream, list(range(step, len(stream), step)))
    assert b"".join(body.pieces) == b"hello" + b"z" * 26
    assert body.ended is not None and body.ended.check(ResponseDone)
    assert h.idle == [h.connection]


def test_bytes_after_a_complete_answer_keep_the_connection_out_of_the_pool() -> None:
    h, body = chunked_body(b"2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n", [])
    assert body.pieces == [b"ok"] and body.ended is not None and body.ended.check(ResponseDone)
    assert h.idle == [] and h.transport.disconnecting


def test_trailers_do_not_become_response_headers() -> None:
    h = Harness()
    d = h.send()
    h.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1  \r\n\r\n"
             b"0\r\nX-B: 2\r\n\r\n")
    response = head_of(d)
    assert response.headers.getRawHeaders(b"x-a") == [b"1"]  # trailing blanks trimmed
    assert not response.headers.hasHeader(b"x-b")


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
    response = head_of(d)
    assert response.length == 1234
    body = Body()
    response.deliverBody(body)
    assert body.ended is not None and body.ended.check(ResponseDone)
    assert head.idle == [] and head.transport.disconnecting  # HEAD answers are not reused


@pytest.mark.parametrize("answer, why", [
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "101"),
    (b"ICY 200 OK\r\n\r\n", "Expected HTTP/"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "status"),
    (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
     "Content-Length"),
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


def test_the_body_protocol_pauses_and_resumes_reading_the_upstream() -> None:
    h = Harness()
    d = h.send()
    h.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    body = Body()
    head_of(d).deliverBody(body)
    body.transport.pauseProducing()  # a slow client: the model server's socket waits
    assert h.transport.producerState == "paused"
    body.transport.resumeProducing()
    assert h.transport.producerState == "producing"
    h.answer(b"3\r\nabc\r\n0\r\n\r\n")
    assert body.pieces == [b"abc"] and h.idle == [h.connection]


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
        self.connections: list[tuple[UpstreamConnection, StringTransport]] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)


def exchange(pool: ConnectionPool, endpoint: FakeEndpoint, key: str = "m") -> UpstreamConnection:
    """One complete request and answer; returns the connection it used."""
    connection = head_of_connection(pool.connection(key, endpoint))  # type: ignore[arg-type]
    d = connection.send(b"GET", b"/", b"m", Headers(), None)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    head_of(d).deliverBody(Body())
    return connection


def head_of_connection(d: Deferred[UpstreamConnection]) -> UpstreamConnection:
    results: list[Any] = []
    d.addBoth(results.append)
    assert isinstance(results[0], UpstreamConnection), results
    return results[0]


def test_the_pool_reuses_idle_connections_and_caps_how_many_it_keeps() -> None:
    clock = Clock()
    pool = ConnectionPool(clock, max_idle_per_origin=1)
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
    pool = ConnectionPool(clock, idle_timeout=10)
    endpoint = FakeEndpoint()
    first = exchange(pool, endpoint)
    second = exchange(pool, endpoint, key="other")
    second.connectionLost(Failure(ConnectionResetError()))
    assert pool.idle_count() == 1
    clock.advance(10)
    assert endpoint.connections[0][1].disconnecting and first.state == "closed"


def test_closing_the_pool_waits_for_every_connection() -> None:
    pool = ConnectionPool(Clock())
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

    client = UpstreamClient(Clock(), Endpoints())  # type: ignore[arg-type]
    assert client._target("http://127.0.0.1:80/x?y=1")[2:] == (b"127.0.0.1", b"/x?y=1")
    assert client._target("http://[::1]:8080/v1")[2:] == (b"[::1]:8080", b"/v1")
    assert client._target("https://models.example/api")[2:] == (b"models.example", b"/api")
    with pytest.raises(UpstreamError):
        client._target("http://127.0.0.1:8080/a b")


@given(st.lists(st.binary(min_size=0, max_size=40), max_size=8), st.booleans(),
       st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_a_chunked_body_arrives_whole_however_it_is_framed_and_cut(
        payloads: list[bytes], extension: bool, cuts: list[int]) -> None:
    """Chunk data containing CRLF, extensions, reads cut anywhere: the payload is intact."""
    ext = b";x=1" if extension else b""
    stream = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in payloads if p)
    stream += b"0\r\n\r\n"
    h, body = chunked_body(stream, [c for c in cuts if c < len(stream)])
    assert b"".join(body.pieces) == b"".join(payloads)
    assert body.ended is not None and body.ended.check(ResponseDone)
    assert h.idle == [h.connection]


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

    client = UpstreamClient(Clock(), Endpoints())  # type: ignore[arg-type]
    d = Deferred.fromCoroutine(client.request(b"POST", "http://127.0.0.1:9/x", Headers(), b""))
    failure = failure_of(d)
    assert failure.check(UpstreamError)
    error = unanswered(failure.value)
    assert error is not None and not error.sent


class OneOrigin:
    """Endpoints for one origin, every connection on a ``StringTransport``."""

    def __init__(self) -> None:
        self.endpoint = FakeEndpoint()

    def endpointForURI(self, uri: Any) -> FakeEndpoint:
        return self.endpoint

    @property
    def connections(self) -> list[tuple[UpstreamConnection, StringTransport]]:
        return self.endpoint.connections


def client_request(client: UpstreamClient, method: bytes,
                   body: Any = None) -> Deferred[UpstreamResponse]:
    return Deferred.fromCoroutine(client.request(method, "http://127.0.0.1:8081/x", Headers(),
                                                 body))


def pooled_client() -> tuple[UpstreamClient, OneOrigin]:
    """A client whose pool holds one idle connection that served a request."""
    origin = OneOrigin()
    client = UpstreamClient(Clock(), origin)  # type: ignore[arg-type]
    d = client_request(client, b"GET")
    origin.connections[0][0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    head_of(d).deliverBody(Body())
    assert client.pool.idle_count() == 1
    return client, origin


def test_a_stale_pooled_connection_is_retried_once_on_a_new_one_for_idempotent_requests() -> None:
    client, origin = pooled_client()
    d = client_request(client, b"GET")
    stale, _ = origin.connections[0]
    assert stale.reused
    stale.connectionLost(Failure(ConnectionResetError("closed while idle")))
    assert len(origin.connections) == 2  # sent again, on a new connection
    fresh, transport = origin.connections[1]
    assert transport.value().startswith(b"GET /x HTTP/1.1\r\n")
    fresh.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert head_of(d).code == 200


def test_the_stale_retry_happens_exactly_once() -> None:
    client, origin = pooled_client()
    d = client_request(client, b"DELETE", body=b"")
    origin.connections[0][0].connectionLost(Failure(ConnectionResetError()))
    origin.connections[1][0].connectionLost(Failure(ConnectionResetError()))
    failure = failure_of(d)
    assert failure.check(NoAnswer) and failure.value.sent and not failure.value.reused
    assert len(origin.connections) == 2


@pytest.mark.parametrize("method, body", [
    (b"POST", b"{}"),  # not idempotent: it reached the server, which may have acted on it
    (b"PUT", Producer([b"abc"], 3)),  # idempotent, but its body was consumed by the first try
])
def test_a_sent_request_that_may_not_be_repeated_is_not_retried(method: bytes,
                                                                 body: Any) -> None:
    client, origin = pooled_client()
    d = client_request(client, method, body)
    origin.connections[0][0].connectionLost(Failure(ConnectionResetError()))
    failure = failure_of(d)
    assert failure.check(NoAnswer) and failure.value.sent and failure.value.reused
    assert len(origin.connections) == 1  # for the caller to decide (web/unanswered.py)


def test_a_reused_connection_that_began_an_answer_is_not_retried() -> None:
    client, origin = pooled_client()
    d = client_request(client, b"GET")
    origin.connections[0][0].dataReceived(b"HTTP/1.1 5")
    origin.connections[0][0].connectionLost(Failure(ConnectionResetError()))
    failure = failure_of(d)
    assert failure.check(UpstreamError) and not failure.check(NoAnswer)
    assert len(origin.connections) == 1


def test_a_new_connection_that_closes_unanswered_is_not_retried() -> None:
    origin = OneOrigin()
    client = UpstreamClient(Clock(), origin)  # type: ignore[arg-type]
    d = client_request(client, b"GET")
    origin.connections[0][0].connectionLost(Failure(ConnectionResetError()))
    assert failure_of(d).check(NoAnswer) and len(origin.connections) == 1


def test_the_retry_policy() -> None:
    stale = NoAnswer("closed", sent=True, reused=True)
    fresh = NoAnswer("closed", sent=True, reused=False)
    assert may_retry_stale(b"GET", None, stale) and may_retry_stale(b"PUT", b"x", stale)
    assert not may_retry_stale(b"GET", None, fresh)
    assert not may_retry_stale(b"POST", b"", stale)
    assert not may_retry_stale(b"GET", Producer([], 0), stale)


def test_a_pool_that_keeps_nothing_closes_each_connection_after_its_answer() -> None:
    pool = ConnectionPool(Clock(), max_idle_per_origin=0)
    endpoint = FakeEndpoint()
    exchange(pool, endpoint)
    exchange(pool, endpoint)
    assert len(endpoint.connections) == 2 and pool.idle_count() == 0
    assert all(transport.disconnecting for _, transport in endpoint.connections)


def test_read_body_collects_the_body_and_refuses_one_too_big() -> None:
    h = Harness()
    d = h.send()
    h.answer(OK_JSON + b'{"a": "b"}')
    body = read_body(head_of(d))
    assert body.result == b'{"a": "b"}'
    big = Harness()
    d = big.send()
    big.answer(OK_JSON)
    reading = read_body(head_of(d), limit=4)
    big.answer(b"0123456789")
    failure = failure_of(reading)
    assert failure.check(UpstreamError) and "over 4 bytes" in failure.getErrorMessage()
    assert big.transport.disconnecting


def test_cancelling_read_body_drops_the_connection() -> None:
    h = Harness()
    d = h.send()
    h.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    reading = read_body(head_of(d))
    reading.cancel()
    assert failure_of(reading).check(CancelledError)
    assert h.transport.disconnecting and h.idle == []


# -- per-origin settings (``timeouts``: docs/timeouts.md) -----------------------------------

class FakeSocket:
    def __init__(self) -> None:
        self.options: dict[tuple[int, int], int] = {}

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options[(level, option)] = value


class SocketTransport(StringTransport):
    """A ``StringTransport`` with a socket handle, as a TCP transport has."""

    def __init__(self) -> None:
        super().__init__()
        self.socket = FakeSocket()

    def getHandle(self) -> FakeSocket:
        return self.socket


class SocketEndpoint(FakeEndpoint):
    def connect(self, factory: Any) -> Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = SocketTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)


def test_idle_timeouts_are_per_origin_and_0_keeps_a_connection_until_the_server_closes_it(
        ) -> None:
    clock = Clock()
    pool = ConnectionPool(clock, idle_timeout=240)
    pool.idle_timeouts = {"short": 5, "forever": 0}
    endpoint = FakeEndpoint()
    short = exchange(pool, endpoint, key="short")
    forever = exchange(pool, endpoint, key="forever")
    default = exchange(pool, endpoint, key="other")
    clock.advance(5)
    assert short.state == "closed" and forever.state == "idle" and default.state == "idle"
    clock.advance(10_000)
    assert forever.state == "idle" and default.state == "closed"
    assert exchange(pool, endpoint, key="forever") is forever


def test_keepalive_probes_are_set_per_origin_on_new_connections_and_prepare_sees_each() -> None:
    prepared: list[Any] = []
    pool = ConnectionPool(Clock(), keepalive=0.0, prepare=prepared.append)
    pool.keepalives = {"probed": 11}
    endpoint = SocketEndpoint()
    exchange(pool, endpoint, key="probed")
    exchange(pool, endpoint, key="quiet")
    probed, quiet = (transport for _, transport in endpoint.connections)
    assert isinstance(probed, SocketTransport) and isinstance(quiet, SocketTransport)
    assert probed.socket.options[(socket.SOL_SOCKET, socket.SO_KEEPALIVE)] == 1
    if hasattr(socket, "TCP_KEEPIDLE"):
        assert probed.socket.options[(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)] == 11
        assert probed.socket.options[(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)] == 11
    assert quiet.socket.options == {}
    assert prepared == [probed, quiet]


def test_keepalive_leaves_a_transport_without_a_socket_alone() -> None:
    pool = ConnectionPool(Clock(), keepalive=30)
    endpoint = FakeEndpoint()
    exchange(pool, endpoint)  # StringTransport has no getHandle: no error
    assert pool.idle_count() == 1


def timed_client(limit: float) -> tuple[UpstreamClient, OneOrigin, Clock]:
    clock = Clock()
    origin = OneOrigin()
    client = UpstreamClient(clock, origin)  # type: ignore[arg-type]
    client.set_origin_timeouts({"http://127.0.0.1:8081/v1": Timeouts(response_header=limit)})
    return client, origin, clock


def test_no_response_head_within_the_origins_limit_fails_the_request_and_drops_it() -> None:
    client, origin, clock = timed_client(2)
    d = client_request(client, b"GET")
    clock.advance(1.9)
    assert not d.called
    clock.advance(0.1)
    failure = failure_of(d)
    assert failure.check(ResponseHeaderTimeout)
    assert failure.getErrorMessage() == (
        "no response headers within 2s (timeouts.responseHeader)")
    assert unanswered(failure.value) is None  # the server may be working on it: not replayed
    assert origin.connections[0][1].disconnecting and len(origin.connections) == 1


def test_a_head_in_time_is_not_cut_by_the_limit_however_long_the_body_takes() -> None:
    client, origin, clock = timed_client(2)
    d = client_request(client, b"GET")
    connection = origin.connections[0][0]
    clock.advance(1)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    body = Body()
    head_of(d).deliverBody(body)
    assert clock.getDelayedCalls() == []
    clock.advance(60)
    connection.dataReceived(b"2\r\nok\r\n0\r\n\r\n")
    assert body.pieces == [b"ok"] and body.ended is not None and body.ended.check(ResponseDone)


def test_other_origins_and_a_limit_of_0_wait_as_long_as_it_takes() -> None:
    clock = Clock()
    origin = OneOrigin()
    client = UpstreamClient(clock, origin)  # type: ignore[arg-type]
    client.set_origin_timeouts({"http://127.0.0.1:8081": Timeouts(response_header=0),
                                "http://127.0.0.1:9999": Timeouts(response_header=1)})
    d = client_request(client, b"GET")
    clock.advance(3600)
    assert not d.called and not origin.connections[0][1].disconnecting


def test_cancelling_a_timed_request_drops_its_connection() -> None:
    client, origin, _ = timed_client(2)
    d = client_request(client, b"GET")
    d.cancel()
    assert failure_of(d).check(CancelledError)
    assert origin.connections[0][1].disconnecting


def test_connect_timeouts_reach_new_connections_of_urls_used_before() -> None:
    reactor = MemoryReactorClock()
    client = UpstreamClient(reactor)
    url = "http://127.0.0.1:8081/v1/chat/completions"
    assert client.origin_of(url) == (b"http", b"127.0.0.1", 8081)
    Deferred.fromCoroutine(client.request(b"GET", url, Headers(), None))
    client.set_origin_timeouts({"http://127.0.0.1:8081": Timeouts(connect=3)})
    Deferred.fromCoroutine(client.request(b"GET", url, Headers(), None))
    client.set_origin_timeouts({"http://127.0.0.1:8081": Timeouts(connect=0)})
    Deferred.fromCoroutine(client.request(b"GET", url, Headers(), None))
    client.set_origin_timeouts({})
    Deferred.fromCoroutine(client.request(b"GET", url, Headers(), None))
    timeouts = [timeout for _, _, _, timeout, _ in reactor.tcpClients]
    assert timeouts == [CONNECT_TIMEOUT, 3, NO_CONNECT_LIMIT, CONNECT_TIMEOUT]


def test_the_endpoint_for_a_connection_of_its_own_has_the_origins_connect_timeout() -> None:
    reactor = MemoryReactorClock()
    client = UpstreamClient(reactor, connect_timeout=7)
    client.set_origin_timeouts({"http://127.0.0.1:8082/": Timeouts(connect=4)})
    client.endpoint_for("http://127.0.0.1:8081/ws").connect(Factory.forProtocol(Protocol))
    client.endpoint_for("http://127.0.0.1:8082/ws").connect(Factory.forProtocol(Protocol))
    assert [timeout for _, _, _, timeout, _ in reactor.tcpClients] == [7, 4]
