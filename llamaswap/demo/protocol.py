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


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
) -> Request | None:
    """The next request on a connection, body included (``None``: the client closed it);
    ``BadRequest`` for one that cannot be read."""
    try:
        line = await reader.readline()
        while line in (b"\r\n", b"\n"):  # tolerate stray CRLFs between requests
            line = await reader.readline()
    except ValueError as exc:  # line longer than the StreamReader limit
        raise BadRequest(431, "request line too long") from exc
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    headers: list[tuple[str, str]] = []
    while True:
        try:
            hline = await reader.readline()
        except ValueError as exc:
            raise BadRequest(431, "header line too long") from exc
        if not hline:
            raise asyncio.IncompleteReadError(b"", None)
        if hline in (b"\r\n", b"\n"):
            break
        if len(headers) >= MAX_HEADER_COUNT:
            raise BadRequest(431, "too many headers")
        name, sep, value = hline.decode("latin-1").partition(":")
        if not sep or not name.strip():
            raise BadRequest(400, "malformed header line")
        headers.append((name.strip(), value.strip()))
    request = Request(method.upper(), target, version, headers, peer=peer)
    if (request.header("expect") or "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.body = await read_body(reader, request)
    return request

async def read_body(reader: asyncio.StreamReader, request: Request) -> bytes:
    """A request's body: ``Content-Length`` or chunked, at most ``MAX_BODY_BYTES``."""
    te = (request.header("transfer-encoding") or "").lower()
    if "chunked" in te:
        body = bytearray()
        while True:
            size_line = await reader.readline()
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError as exc:
                raise BadRequest(400, "bad chunk size") from exc
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # discard trailers
                return bytes(body)
            if len(body) + size > MAX_BODY_BYTES:
                raise BadRequest(413, "request body too large")
            body += await reader.readexactly(size)
            await reader.readline()
    length_header = request.header("content-length")
    if length_header is None:
        return b""
    try:
        length = int(length_header)
    except ValueError as exc:
        raise BadRequest(400, "bad Content-Length") from exc
    if length < 0:
        raise BadRequest(400, "bad Content-Length")
    if length > MAX_BODY_BYTES:
        raise BadRequest(413, "request body too large")
    return await reader.readexactly(length) if length else b""
