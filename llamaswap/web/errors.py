"""Errors the proxy itself produces, in the OpenAI-style envelope llama-swap uses.

``{"src": "llamaswap", "error": {"message", "type", "param": null, "code"}}``, or plain text /
HTML when the client's ``Accept`` asks for it. Once a response has started, the only honest
error is to abort the connection, so the client can tell the body is incomplete.
"""

from __future__ import annotations

import html
import json
from typing import Any

from twisted.python.failure import Failure
from twisted.web.error import UnsupportedMethod
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from llamaswap.context import context_of
from llamaswap.logs import get_logger
from llamaswap.web.anthropic import ANTHROPIC_API, anthropic_error_body

log = get_logger()

_TYPES = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "unauthorized"),
    403: ("authentication_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    414: ("invalid_request_error", "uri_too_long"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    431: ("invalid_request_error", "request_header_fields_too_large"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "gateway_timeout"),
}


def error_body(status: int, message: str, code: str | None = None) -> dict[str, object]:
    default_type, default_code = _TYPES.get(
        status, ("invalid_request_error", "invalid_request") if 400 <= status < 500
        else ("server_error", "internal_error"))
    return {"src": "llamaswap", "error": {"message": message, "type": default_type,
                                          "param": None, "code": code or default_code}}


def header_text(request: Request, name: bytes) -> str:
    """A request header's first value as text, whatever bytes the client sent in it
    (``getHeader`` with a ``str`` name decodes UTF-8, and fails on other bytes)."""
    value = request.getHeader(name)
    return value.decode("latin-1") if value else ""


def send_error(request: Request, status: int, message: str, code: str | None = None,
               headers: dict[str, str] | None = None) -> None:
    """Answer ``request`` with an error, unless the client is gone; abort if already started."""
    context = context_of(request)
    if context.gone or request.finished:
        return
    if request.startedWriting:
        abort_connection(request)
        return
    request.setResponseCode(status)
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    accept = header_text(request, b"accept").lower()
    if context.api == ANTHROPIC_API:  # set by the root for Anthropic endpoints
        request.setHeader("content-type", "application/json")
        body = json.dumps(anthropic_error_body(status, message)).encode()
    elif "text/plain" in accept:
        request.setHeader("content-type", "text/plain; charset=utf-8")
        body = f"llamaswap: {message}\n".encode()
    elif "text/html" in accept and "application/json" not in accept:
        request.setHeader("content-type", "text/html; charset=utf-8")
        body = (f"<html><body><h1>llamaswap</h1><p>{html.escape(message)}</p></body></html>"
                .encode())
    else:
        request.setHeader("content-type", "application/json")
        body = json.dumps(error_body(status, message, code)).encode()
    request.setHeader("content-length", str(len(body)))
    request.write(body)
    request.finish()


_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large",
            414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


def error_response(status: int, message: str, code: str | None = None,
                   api: str = "openai") -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, for a channel that
    answers before any ``Request`` is processed (a refused head, an early 413)."""
    if api == ANTHROPIC_API:
        body = json.dumps(anthropic_error_body(status, message)).encode()
    else:
        body = json.dumps(error_body(status, message, code)).encode()
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s"
            % (status, _REASONS.get(status, b"Error"), len(body), body))


def abort_connection(request: Request) -> None:
    """Drop the client connection: the only honest error once a response has started."""
    transport: Any = request.transport
    if transport is not None:
        transport.abortConnection()


def json_bytes(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class EnvelopeErrorsMixin:
    """Mix into a ``twisted.web.server.Request`` subclass, before it in the bases: the
    errors twisted.web would answer with an HTML page of its own get the envelope instead.

    - a method the resource has no ``render_<METHOD>`` for (twisted.web's "405 Method Not
      Allowed", or "501 Huh?" for one outside GET/HEAD/POST): 405 with ``Allow``, or 404
      where the resource allows no method at all (an inner node of the tree);
    - an exception while finding or rendering a resource ("500 Processing Failed"): 500,
      logged with its traceback (a bug in llamaswap, never the client's input).
    """

    method: bytes
    path: bytes

    def render(self, resrc: Any) -> None:
        super().render(_MethodChecked(resrc))  # type: ignore[misc]

    def processingFailed(self, reason: Failure) -> Failure:
        request: Any = self
        log.failure("error handling {method} {path}", reason,
                    method=self.method.decode("ascii", "replace"),
                    path=self.path.decode("latin-1"))
        send_error(request, 500, "internal error in llamaswap; see its log")
        return reason


class _MethodChecked:
    """A resource's ``render``, with an unsupported method answered in the envelope."""

    __slots__ = ("_resource",)

    def __init__(self, resource: Any) -> None:
        self._resource = resource

    def render(self, request: Request) -> Any:
        resource = self._resource
        if (request.method == b"HEAD" and type(resource).render is Resource.render
                and getattr(resource, "render_GET", None) is None):
            # Resource.render_HEAD calls a render_GET that is not there: no method at all.
            return self._refuse(request, [])
        try:
            return resource.render(request)
        except UnsupportedMethod as e:
            methods: list[bytes] = list(e.allowedMethods)
            allowed = [m.decode("ascii", "replace") for m in methods]
            if request.method == b"HEAD" and "GET" in allowed:
                raise  # twisted.web answers HEAD with the resource's GET
            if "GET" not in allowed and "HEAD" in allowed:
                allowed.remove("HEAD")  # only Resource's own render_HEAD, which needs a GET
            return self._refuse(request, allowed)

    @staticmethod
    def _refuse(request: Request, allowed: list[str]) -> Any:
        if not allowed:
            send_error(request, 404, f"no such endpoint: {request.path.decode('latin-1')}")
        else:
            method = request.method.decode("ascii", "replace")
            send_error(request, 405, f"method {method} not allowed on this path",
                       headers={"allow": ", ".join(allowed)})
        return NOT_DONE_YET
