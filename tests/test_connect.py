"""``llamaswap.upstream.connect``: how llamaswap connects to model servers."""

from __future__ import annotations

import pytest
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    _WrapperEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.web.client import URI
from twisted.web.error import SchemeNotSupported

from llamaswap.upstream.connect import ATTEMPT_DELAY, NO_CONNECT_LIMIT, ModelEndpointFactory


def endpoint(url: str) -> object:
    return ModelEndpointFactory(MemoryReactorClock()).endpointForURI(URI.fromBytes(url.encode()))


def test_ip_literals_connect_directly_without_a_name_lookup() -> None:
    v4 = endpoint("http://127.0.0.1:5800/health")
    assert isinstance(v4, TCP4ClientEndpoint)
    assert (v4._host, v4._port) == ("127.0.0.1", 5800)
    v6 = endpoint("http://[::1]:5801/health")
    assert isinstance(v6, TCP6ClientEndpoint)
    assert (v6._host, v6._port) == ("::1", 5801)


def test_names_fail_over_quickly_instead_of_after_300_ms() -> None:
    by_name = endpoint("http://localhost:5800/")
    assert isinstance(by_name, HostnameEndpoint)
    # Twisted's default 0.3 s is also how long a refused connection takes to be reported.
    assert by_name._attemptDelay == ATTEMPT_DELAY < 0.3


def test_https_is_wrapped_in_tls_and_other_schemes_are_refused() -> None:
    assert isinstance(endpoint("https://models.example:443/"), _WrapperEndpoint)
    with pytest.raises(SchemeNotSupported):
        endpoint("ftp://127.0.0.1:21/")


def test_one_endpoint_per_origin_is_built_and_reused() -> None:
    factory = ModelEndpointFactory(MemoryReactorClock())
    first = factory.endpointForURI(URI.fromBytes(b"http://localhost:5800/v1/chat/completions"))
    again = factory.endpointForURI(URI.fromBytes(b"http://localhost:5800/health"))
    other = factory.endpointForURI(URI.fromBytes(b"http://localhost:5801/health"))
    assert first is again
    assert other is not first


def test_connect_timeouts_are_per_origin_and_0_means_as_long_as_the_system_tries() -> None:
    reactor = MemoryReactorClock()
    factory = ModelEndpointFactory(reactor, connect_timeout=12)
    before = factory.endpointForURI(URI.fromBytes(b"http://127.0.0.1:5800/"))
    factory.set_connect_timeouts({(b"http", b"127.0.0.1", 5800): 3,
                                  (b"http", b"localhost", 5801): 0})
    after = factory.endpointForURI(URI.fromBytes(b"http://127.0.0.1:5800/"))
    assert after is not before  # rebuilt with the new timeout
    for url in (b"http://127.0.0.1:5800/", b"http://127.0.0.1:5802/"):
        factory.endpointForURI(URI.fromBytes(url)).connect(Factory.forProtocol(Protocol))
    assert [timeout for *_, timeout, _ in reactor.tcpClients] == [3, 12]
    by_name = factory.endpointForURI(URI.fromBytes(b"http://localhost:5801/"))
    assert isinstance(by_name, HostnameEndpoint) and by_name._timeout == NO_CONNECT_LIMIT
