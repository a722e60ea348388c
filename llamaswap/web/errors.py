"""Errors the proxy itself produces, in the OpenAI-style envelope llama-swap uses.

``{"src": "llamaswap", "error": {"message", "type", "param": null, "code"}}``, or plain text /
HTML when the client's ``Accept`` asks for it. Once a response has started, the only honest
error is to abort the connection, so the client can tell the body is incomplete.
"""

from __future__ import annotations

import html
import json
from typing import Any

from twisted.web.server import Request

from llamaswap.context import context_of
from llamaswap.web.anthropic import ANTHROPIC_API, anthropic_error_body

_TYPES = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "unauthorized"),
    403: ("authentication_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
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
    accept = (request.getHeader("accept") or "").lower()
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


def abort_connection(request: Request) -> None:
    """Drop the client connection: the only honest error once a response has started."""
    transport: Any = request.transport
    if transport is not None:
        transport.abortConnection()


def json_bytes(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
