# -*- test-case-name: tests.test_fast_channel -*-
"""``Request.process`` with the ``Date`` header formatted once a second.

twisted.web's ``Request.process`` formats ``Date`` for every request and sets both of its
headers through ``setHeader`` (canonicalised and sanitised each time); this one formats the
date once a second and stores the two constant-named headers directly.

Private state used: ``Headers._rawHeaders``, ``Request._handleStar``, ``Request._encoder``,
``resource._IEncodingResource``. ``process`` is Twisted's own, step for step, but for those
two headers. The gate (``WORKS``) serves canned requests (a page, a ``HEAD``, an error, an
``OPTIONS *``, a gzip-encoded answer) with and without it and requires the same bytes
but for the date.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote_to_bytes as unquote  # what twisted.web.http.unquote is

from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, Logger
from twisted.python import failure
from twisted.web import resource
from twisted.web.http import datetimeToString
from twisted.web.resource import EncodingResourceWrapper, Resource
from twisted.web.server import GzipEncoderFactory, Request, Site
from twisted.web.server import version as _server_version
from zope.interface import implementer

from llamaswap.web.fast.gate import gate

_date_second = -1
_date = b""


def http_date() -> bytes:
    """``datetimeToString()``, formatted once a second."""
    global _date_second, _date
    now = time.time()
    second = int(now)
    if second != _date_second:
        _date = datetimeToString(second)
        _date_second = second
    return _date


class FastProcessRequest(Request):
    """``Request`` with the quicker ``process``; mixed in just above ``Request`` under any
    subclass by ``with_fast_process``."""

    def process(self) -> None:
        # twisted.web.server.Request.process, but for the Server and Date headers.
        request: Any = self
        request.site = request.channel.site
        # setHeader, without canonicalising and sanitising names and values that need not.
        headers = request.responseHeaders._rawHeaders
        headers[b"Server"] = [_server_version]
        headers[b"Date"] = [http_date()]
        request.prepath = []
        # unquote returns a segment without "%" as it is: skip the call for those.
        request.postpath = [unquote(segment) if b"%" in segment else segment
                            for segment in request.path[1:].split(b"/")]
        if request.path == b"*":
            request._handleStar()
            return
        try:
            found = request.site.getResourceFor(request)
            if resource._IEncodingResource.providedBy(found):
                encoder = found.getEncoder(request)
                if encoder is not None:
                    request._encoder = encoder
            request.render(found)
        except BaseException:
            request.processingFailed(failure.Failure())


_classes: dict[type, type] = {}


def with_fast_process(base: type) -> type:
    """``base`` (``Request`` or a subclass) with ``FastProcessRequest`` placed right above
    ``Request`` in its method order: a subclass's ``process`` still runs (an access log, a
    timer) and reaches the quicker one where it would have reached ``Request.process``."""
    if not issubclass(base, Request):
        raise TypeError(f"{base.__name__} is not a twisted.web.server.Request")
    if base is Request or issubclass(base, FastProcessRequest):
        return FastProcessRequest if base is Request else base
    fast = _classes.get(base)
    if fast is None:
        fast = _classes[base] = type(f"FastProcess{base.__name__}",
                                     (base, FastProcessRequest), {})
    return fast


# -- the gate ---------------------------------------------------------------------------------


class _Page(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        if request.path == b"/boom":
            raise ValueError("the gate's own error page")
        return b"page %r %r" % (request.uri, request.postpath)


@implementer(ILogObserver)
def _discard(event: LogEvent) -> None:
    pass


class _Quiet(Request):
    """No logged traceback for the canned error."""

    _log = Logger(observer=_discard)


_CANNED = (
    b"GET /x/a%20b?y=1 HTTP/1.1\r\n\r\n",
    b"HEAD /x HTTP/1.1\r\n\r\n",
    b"GET /boom HTTP/1.1\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\n\r\n",
    b"GET /x HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n",
)


def _serve(factory: type, root: Resource, data: bytes) -> list[bytes]:
    site = Site(root, requestFactory=factory)
    channel: Any = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    channel.connectionLost(Exception("gate done"))
    answer: bytes = transport.value()
    return answer.split(b"\r\n")


def _without_date(lines: list[bytes]) -> list[bytes]:
    return [line for line in lines if not line.startswith(b"Date: ")]


@gate("request")
def _works() -> bool:
    fast_class = with_fast_process(_Quiet)
    date = b"Date: " + http_date()
    for root in (_Page(), EncodingResourceWrapper(_Page(), [GzipEncoderFactory()])):
        for data in _CANNED:
            stock = _serve(_Quiet, root, data)
            fast = _serve(fast_class, root, data)
            if _without_date(fast) != _without_date(stock) or not stock[0]:
                return False
            if sum(line.startswith(b"Date: ") for line in fast) != 1 or (
                    date not in fast and b"Date: " + http_date() not in fast):
                return False
    return True


WORKS = _works()
"""``FastProcessRequest.process`` answers as Twisted's on this Twisted (checked at import)."""
