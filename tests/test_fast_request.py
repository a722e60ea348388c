"""The quicker ``Request.process`` against twisted.web's own: the same answers but for the
date; the switch, and what the site builds with it; and the per-connection caches.

Every test runs with the fast path on (the pieces whose gate passed) and off: both must give
twisted.web's answers."""

from __future__ import annotations

import calendar
import time
from io import BytesIO
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.web import http
from twisted.web.http import datetimeToString
from twisted.web.resource import EncodingResourceWrapper, Resource
from twisted.web.server import NOT_DONE_YET, GzipEncoderFactory, Request, Site
from twisted.web.server import version as server_version

from llamaswap.web.fast import PIECES, FastPath
from llamaswap.web.fast import request as fastrequest
from llamaswap.web.fast.request import http_date
from llamaswap.web.site import HardenedChannel, HardenedSite

_MODES = {"on": FastPath.configure(True, environ={}), "off": FastPath.off()}
_mode = _MODES["on"]


@pytest.fixture(autouse=True, params=sorted(_MODES))
def fast_mode(request: pytest.FixtureRequest) -> FastPath:
    global _mode
    _mode = _MODES[request.param]
    return _mode


def _fast_request_class(base: type) -> type:
    return _mode.request_class(base)


class _Echo(http.Request):
    """Answers with what the channel gave it."""

    def process(self) -> None:
        body = repr((self.method, self.uri, self.client, self.host, self.isSecure())).encode()
        self.setHeader(b"Content-Length", b"%d" % len(body))
        self.write(body)
        self.finish()


# -- per-connection caches -------------------------------------------------------------------


class _CountingTransport(StringTransport):
    asked = 0

    def getHost(self) -> Any:
        self.asked += 1
        return super().getHost()

    def getPeer(self) -> Any:
        self.asked += 1
        return super().getPeer()


def test_addresses_are_asked_once_per_connection() -> None:
    channel = HardenedChannel(Clock())
    channel.requestFactory = _Echo
    transport = _CountingTransport()
    channel.makeConnection(transport)
    for _ in range(3):
        channel.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    assert transport.value().count(b"HTTP/1.1 200") == 3
    assert transport.asked == 2
    assert channel.getHost() == transport.getHost()
    assert channel.getPeer() == transport.getPeer()
    assert channel.isSecure() is False


def test_secure_transport_is_still_secure() -> None:
    from twisted.internet.interfaces import ISSLTransport
    from zope.interface import directlyProvides

    class TLSTransport(StringTransport):
        def setTcpNoDelay(self, enabled: bool) -> None:
            pass

    channel = HardenedChannel(Clock())
    transport = TLSTransport()
    directlyProvides(transport, ISSLTransport)
    channel.makeConnection(transport)
    assert channel.isSecure() is True and channel.isSecure() is True


# -- FastProcessRequest ------------------------------------------------------------------------


def test_http_date_is_twisteds_formatted_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_800_000_000.25]
    monkeypatch.setattr(fastrequest.time, "time", lambda: now[0])
    first = http_date()
    assert first == datetimeToString(1_800_000_000)
    now[0] = 1_800_000_000.99
    assert http_date() is first
    now[0] = 1_800_000_001.0
    assert http_date() == datetimeToString(1_800_000_001) != first
    monkeypatch.undo()
    assert abs(time.time() - _parse_date(http_date())) < 2


def _parse_date(value: bytes) -> float:
    from email.utils import parsedate_to_datetime
    return parsedate_to_datetime(value.decode()).timestamp()


class _Page(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes | int:
        if request.path == b"/boom":
            raise ValueError("boom")
        if request.path == b"/later":
            request.write(b"la")
            request.write(b"ter")
            request.finish()
            return NOT_DONE_YET
        return b"page " + request.uri


class _NoTracebacks(Logger):
    def failure(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Recorded(Request):
    """``processingFailed`` without the logged traceback, which would fail the test."""

    failed: list[Any] = []
    _log = _NoTracebacks()

    def processingFailed(self, reason: Any) -> Any:
        self.failed.append(reason.type)
        return super().processingFailed(reason)


def _serve(factory: Any, data: bytes, root: Resource) -> bytes:
    site = Site(root)
    site.requestFactory = factory
    channel: Any = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    return _without_date(transport.value())


def _without_date(response: bytes) -> bytes:
    lines = response.split(b"\r\n")
    return b"\r\n".join(b"Date: -" if line.startswith(b"Date: ") else line for line in lines)


@pytest.mark.parametrize("data", [
    b"GET /x?y=1 HTTP/1.1\r\n\r\n",
    b"HEAD /x HTTP/1.1\r\n\r\n",
    b"GET /later HTTP/1.1\r\n\r\n",
    b"GET /boom HTTP/1.1\r\n\r\n",
    b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\n\r\n",
    b"GET /x HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n",
])
def test_fast_request_answers_as_twisteds_request(data: bytes) -> None:
    _Recorded.failed.clear()
    for root in (_Page(), EncodingResourceWrapper(_Page(), [GzipEncoderFactory()])):
        expected = _serve(_Recorded, data, root)
        assert _serve(_fast_request_class(_Recorded), data, root) == expected
        assert b"\r\nDate: -\r\n" in expected and b"\r\nServer: TwistedWeb/" in expected
    if b"boom" in data:
        assert _Recorded.failed == [ValueError] * 4


def test_fast_request_sets_server_and_date_headers_as_setheader_would(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastrequest.time, "time", lambda: 1_800_000_000.5)
    seen: list[Any] = []

    class Look(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            seen.append(request.responseHeaders.copy())
            return b""

    _serve(_fast_request_class(_Recorded), b"GET / HTTP/1.1\r\n\r\n", Look())
    assert seen[0].getRawHeaders(b"server") == [server_version]
    if "request" in _mode.pieces:
        assert seen[0].getRawHeaders("date") == [datetimeToString(1_800_000_000).decode()]
    else:  # Twisted's own: from time.time (patched) or from gmtime(), as releases differ
        when = _parse_date(seen[0].getRawHeaders(b"date")[0])
        assert when == 1_800_000_000 or abs(when - calendar.timegm(time.gmtime())) < 5


def test_content_file_choice_is_kept() -> None:
    site = HardenedSite(_Page())
    assert isinstance(site.getContentFile(10), BytesIO)
    assert not isinstance(site.getContentFile(100_000), BytesIO)
    assert not isinstance(site.getContentFile(None), BytesIO)



# -- the switch, and what the site builds with it -------------------------------------------


def test_the_site_uses_the_pieces_it_is_given_and_only_those() -> None:
    site = HardenedSite(_Page(), reactor=Clock(), fast_path=_mode)
    site.requestFactory = _Recorded
    channel: Any = site.buildProtocol(None)
    assert isinstance(channel, HardenedChannel)
    assert issubclass(channel.requestFactory, fastrequest.FastProcessRequest) == (
        "request" in _mode.pieces)
    assert issubclass(channel.requestFactory, _Recorded)
    if not _mode.pieces:
        assert type(channel) is HardenedChannel and channel.requestFactory is _Recorded


def test_the_environment_wins_over_the_config() -> None:
    from llamaswap.web.fast import ENV_VAR, chosen, parse_switch

    assert chosen(True, {}) == frozenset(PIECES)
    assert chosen(False, {}) == frozenset()
    assert chosen(True, {ENV_VAR: "0"}) == frozenset()
    assert chosen(False, {ENV_VAR: "on"}) == frozenset(PIECES)
    assert chosen(False, {ENV_VAR: "request, writes"}) == {"request", "writes"}
    assert chosen(False, {ENV_VAR: "bogus"}) == frozenset()  # logged, config used
    with pytest.raises(ValueError, match="bogus"):
        parse_switch("request,bogus")


def test_configured_pieces_are_those_asked_for_whose_gate_passed() -> None:
    from llamaswap.web.fast import working

    assert FastPath.configure(True, {}).pieces == working()
    assert FastPath.configure(True, {"LLAMASWAP_FAST_PATH": "request"}).pieces <= {"request"}


def test_a_request_that_answers_differently_fails_its_gate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastrequest, "_server_version", b"NotTwisted")
    assert fastrequest._works() is False


def test_a_subclass_process_still_runs_and_reaches_the_quicker_one() -> None:
    seen: list[str] = []

    class Logged(_Recorded):
        def process(self) -> None:
            seen.append("subclass")
            super().process()

    site = HardenedSite(_Page(), reactor=Clock(), fast_path=_mode)
    site.requestFactory = Logged
    channel: Any = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /x HTTP/1.1\r\n\r\n")
    assert seen == ["subclass"]
    assert transport.value().startswith(b"HTTP/1.1 200") and transport.value().endswith(
        b"page /x")
    channel.connectionLost(Exception("done"))

