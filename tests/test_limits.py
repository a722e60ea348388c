"""The request size limit acts while the body arrives (``web/limits.py``), in memory."""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Site

from llamaswap.web.limits import LimitedRequest
from llamaswap.web.site import HardenedSite


class Recorder(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render_POST(self, request) -> bytes:  # type: ignore[no-untyped-def]
        self.bodies.append(request.content.read())
        return b"ok"


def connect(limit: int = 1000) -> tuple[Recorder, StringTransport, object]:
    resource = Recorder()
    site = Site(resource)
    site.requestFactory = LimitedRequest
    site.max_request_size = limit  # type: ignore[attr-defined]
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return resource, transport, channel


def test_declared_length_over_the_limit_is_refused_before_the_body_is_sent() -> None:
    resource, transport, channel = connect()
    channel.dataReceived(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: 10000000\r\nExpect: 100-continue\r\n\r\n")
    answer = transport.value()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in answer  # the client never sends the 10 MB
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "request_too_large"
    assert transport.disconnecting and resource.bodies == []


def test_anthropic_path_gets_anthropic_shape() -> None:
    # Only llamaswap's channel knows a request's target before twisted.web has read it
    # all (``target_of``, web/strict.py); a plain channel's 413 takes the OpenAI shape.
    site = HardenedSite(Recorder(), reactor=Clock())
    site.requestFactory = LimitedRequest
    site.max_request_size = 1000  # type: ignore[attr-defined]
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"POST /v1/messages HTTP/1.1\r\nContent-Length: 5000\r\n\r\n")
    body = json.loads(transport.value().partition(b"\r\n\r\n")[2])
    assert body["type"] == "error" and body["error"]["type"] == "request_too_large"


def test_chunked_body_is_cut_off_once_it_passes_the_limit() -> None:
    resource, transport, channel = connect()
    channel.dataReceived(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    channel.dataReceived(b"258\r\n" + b"a" * 600 + b"\r\n")
    assert transport.value() == b""  # 600 bytes: still fine
    channel.dataReceived(b"258\r\n" + b"a" * 600 + b"\r\n")
    assert transport.value().startswith(b"HTTP/1.1 413 ")
    channel.dataReceived(b"258\r\n" + b"a" * 600 + b"\r\n0\r\n\r\n")  # discarded, then closed
    assert transport.disconnecting and resource.bodies == []


def test_bodies_within_the_limit_are_served() -> None:
    resource, transport, channel = connect()
    channel.dataReceived(b"POST /x HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + b"b" * 1000)
    assert resource.bodies == [b"b" * 1000]
    assert transport.value().startswith(b"HTTP/1.1 200 ")
