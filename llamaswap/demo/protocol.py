"""The demo server's HTTP/1.1 side: requests read from an asyncio stream, answers written
plainly or chunked (standard library only, see the package docstring)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_HEADER_COUNT = 200
MAX_BODY_BYTES = 64 * 1024 * 1024

REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class BadRequest(Exception):
    """The request could not be parsed; answer ``status`` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    """One parsed HTTP request (the body is always read in full before routing)."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    peer: str = "-"
    path: str = field(init=False)
    query: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        self.path = parts.path or "/"
        self.query = parse_qs(parts.query, keep_blank_values=True)

    def header(self, name: str, default: str | None = None) -> str | None:
        """Return the first header called ``name`` (case-insensitive)."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return default

    def headers_dict(self) -> dict[str, str]:
        """Headers keyed by lower-case name; repeated headers are joined with ``", "``."""
        out: dict[str, str] = {}
        for key, value in self.headers:
            lkey = key.lower()
            out[lkey] = f"{out[lkey]}, {value}" if lkey in out else value
        return out

    def query_value(self, name: str, default: str) -> str:
        """Return the first value of query parameter ``name``."""
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 only on request."""
        conn = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


class Responder:
    """Writes one response to a connection; knows whether the connection survives it."""

    def __init__(self, writer: asyncio.StreamWriter, request: Request) -> None:
        self.writer = writer
        self.request = request
        self.keep_alive = request.keep_alive
        self.status = 0
        self.started = False
        self.streaming = False
        self._chunked = False
        self.bytes_sent = 0

    @property
    def closed(self) -> bool:
        """True once the peer has gone away (so a stream should stop producing)."""
        return self.writer.is_closing()

    def _head(self, status: int, headers: Sequence[tuple[str, str]]) -> bytes:
        self.status = status
        self.started = True
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
        lines.extend(f"{k}: {v}" for k, v in headers)
        lines.append(f"Connection: {'keep-alive' if self.keep_alive else 'close'}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Send a complete response with a ``Content-Length``."""
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        headers.extend(extra_headers)
        data = self._head(status, headers)
        if self.request.method != "HEAD":
            data += body
        await self._write(data)

    async def send_json(
        self, status: int, obj: Any, extra_headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Send ``obj`` as a JSON response."""
        body = json.dumps(obj, separators=(",", ":")).encode()
        await self.send(status, body, "application/json", extra_headers)

    async def send_error(
        self, status: int, message: str, err_type: str = "invalid_request_error"
    ) -> None:
        """Send an error in the OpenAI ``{"error": {...}}`` shape."""
        await self.send_json(
            status, {"error": {"message": message, "type": err_type, "param": None, "code": status}}
        )

    async def start_stream(self, content_type: str, status: int = 200) -> None:
        """Send headers for a streamed body (chunked, or close-delimited for HTTP/1.0)."""
        headers = [("Content-Type", content_type), ("Cache-Control", "no-cache")]
        if self.request.version == "HTTP/1.0":
            self.keep_alive = False
        else:
            self._chunked = True
            headers.append(("Transfer-Encoding", "chunked"))
        self.streaming = True
        await self._write(self._head(status, headers))

    async def write(self, data: bytes) -> None:
        """Write one piece of a streamed body and flush it to the socket now."""
        if not data:
            return
        if self._chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        await self._write(data)

    async def end_stream(self) -> None:
        """Terminate a streamed body."""
        if self._chunked:
            await self._write(b"0\r\n\r\n")

    async def _write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("client went away")
        self.writer.write(data)
        self.bytes_sent += len(data)
        await self.writer.drain()


Handler = Callable[[Request, Responder], Awaitable[None]]
