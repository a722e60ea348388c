"""Which headers go upstream and which come back: hop-by-hop ones never do either way."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

from llamaswap.web.forward import copy_response_headers, upstream_headers


def test_the_clients_headers_go_upstream_without_hop_by_hop_ones() -> None:
    request = DummyRequest([b"v1"])
    request.isSecure = lambda: False  # type: ignore[method-assign]
    request.client = IPv4Address("TCP", "192.168.1.1", 40000)
    for name, values in {b"Content-Type": [b"application/json"], b"X-Dup": [b"a", b"b"],
                         b"Connection": [b"keep-alive, X-Secret-Hop"],
                         b"X-Secret-Hop": [b"1"], b"Keep-Alive": [b"timeout=5"],
                         b"Transfer-Encoding": [b"chunked"], b"Host": [b"proxy:8080"],
                         b"X-Forwarded-For": [b"10.0.0.1"]}.items():
        request.requestHeaders.setRawHeaders(name, values)
    out = upstream_headers(request)
    got = {name: list(values) for name, values in out.getAllRawHeaders()}
    assert got == {b"Content-Type": [b"application/json"], b"X-Dup": [b"a", b"b"],
                   b"X-Forwarded-For": [b"10.0.0.1, 192.168.1.1"],
                   b"X-Forwarded-Proto": [b"http"], b"X-Forwarded-Host": [b"proxy:8080"]}
    out.addRawHeader(b"X-Dup", b"c")  # the copy is the upstream request's own
    assert request.requestHeaders.getRawHeaders(b"x-dup") == [b"a", b"b"]


def test_the_upstreams_headers_replace_ours_and_hop_by_hop_ones_stay_behind() -> None:
    request = DummyRequest([b"v1"])
    request.responseHeaders.setRawHeaders(b"Server", [b"TwistedWeb"])
    response: Any = type("Response", (), {})()
    response.headers = Headers({b"Server": [b"llama.cpp"], b"Content-Type": [b"text/event-stream"],
                                b"Connection": [b"close"], b"Set-Cookie": [b"a=1", b"b=2"]})
    response.length = 12
    copy_response_headers(response, request)
    got = {name: list(values) for name, values in request.responseHeaders.getAllRawHeaders()}
    assert got == {b"Server": [b"llama.cpp"], b"Content-Type": [b"text/event-stream"],
                   b"Set-Cookie": [b"a=1", b"b=2"], b"X-Accel-Buffering": [b"no"]}
