"""multipart/form-data without holding uploads in memory.

twisted.web has already spooled a large body to a temporary file when a resource sees it.
``scan`` walks that file in fixed-size chunks and records where each part's body lies, reading
only the part headers; ``field_value`` reads one small field (``model``). To rename the model
for the upstream, ``splice`` builds a producer that streams the file's bytes around the
``model`` value and the new value in its place: same boundary, exact ``Content-Length``, and
the uploaded file parts never enter memory.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from twisted.web.client import FileBodyProducer

CHUNK = 64 * 1024
MAX_PART_HEADERS = 16 * 1024
_BOUNDARY_RE = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_PARAM_RE = re.compile(r';\s*([A-Za-z*]+)="?((?<=")[^"]*|[^;\s"]*)"?')


class MalformedMultipart(ValueError):
    """The body is not the multipart/form-data its Content-Type announces."""


@dataclass(frozen=True)
class Part:
    name: str | None
    filename: str | None
    start: int
    """Offset of the part's body in the file."""
    end: int
    """Offset just past the part's body."""


def boundary_of(content_type: str) -> bytes | None:
    match = _BOUNDARY_RE.search(content_type)
    if not match:
        return None
    return (match.group(1) or match.group(2)).encode("latin-1")


def _delimiters(file: IO[bytes], boundary: bytes) -> list[int]:
    """Offsets of every ``--boundary`` that starts a line, found chunk by chunk."""
    marker = b"\r\n--" + boundary
    found: list[int] = []
    file.seek(0)
    head = file.read(len(marker))
    if head.startswith(marker[2:]):
        found.append(0)
    file.seek(0)
    buffer, buffer_start = b"", 0
    while True:
        chunk = file.read(CHUNK)
        if not chunk:
            return found
        buffer += chunk
        position = buffer.find(marker)
        while position != -1:
            found.append(buffer_start + position + 2)
            position = buffer.find(marker, position + len(marker))
        keep = len(marker) - 1
        buffer_start += max(len(buffer) - keep, 0)
        buffer = buffer[-keep:]


def scan(file: IO[bytes], boundary: bytes) -> list[Part]:
    """The parts of a multipart body held in ``file`` (read in chunks, never whole)."""
    delimiters = _delimiters(file, boundary)
    if not delimiters:
        raise MalformedMultipart("no multipart boundary found in the body")
    parts: list[Part] = []
    for index, here in enumerate(delimiters):
        file.seek(here + 2 + len(boundary))
        head = file.read(MAX_PART_HEADERS + 4)
        if head.startswith(b"--"):
            break
        if index + 1 == len(delimiters):
            raise MalformedMultipart("the multipart body has no closing boundary")
        following = delimiters[index + 1]
        line_end = head.find(b"\r\n")
        header_end = head.find(b"\r\n\r\n", max(line_end, 0))
        if line_end == -1 or header_end == -1:
            raise MalformedMultipart("a multipart part has no end of headers")
        headers = head[line_end + 2:header_end].decode("utf-8", "replace")
        start = here + 2 + len(boundary) + header_end + 4
        end = following - 2  # the CRLF before the next delimiter belongs to it
        if end < start:
            raise MalformedMultipart("a multipart part ends before its headers do")
        name = filename = None
        for line in headers.split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                params = {k.lower(): v for k, v in _PARAM_RE.findall(value)}
                name, filename = params.get("name"), params.get("filename")
        parts.append(Part(name=name, filename=filename, start=start, end=end))
    return parts


def field_value(file: IO[bytes], part: Part, limit: int = 4096) -> str:
    """A small text field's value; longer than ``limit`` bytes is malformed for our use."""
    if part.end - part.start > limit:
        raise MalformedMultipart(f"form field {part.name!r} is longer than {limit} bytes")
    file.seek(part.start)
    return file.read(part.end - part.start).decode("utf-8", "replace")


class _SpliceReader:
    """A read-only file over segments: byte ranges of one file, and in-memory bytes."""

    def __init__(self, file: IO[bytes], segments: Sequence[tuple[int, int] | bytes]) -> None:
        self._file = file
        self._segments = list(segments)
        self.length = sum(len(s) if isinstance(s, bytes) else s[1] - s[0] for s in segments)

    def read(self, size: int) -> bytes:
        while self._segments:
            segment = self._segments[0]
            if isinstance(segment, bytes):
                if segment:
                    data, rest = segment[:size], segment[size:]
                    self._segments[0] = rest
                    return data
                self._segments.pop(0)
                continue
            start, end = segment
            if start >= end:
                self._segments.pop(0)
                continue
            self._file.seek(start)
            data = self._file.read(min(size, end - start))
            if not data:
                raise MalformedMultipart("the spooled request body shrank while being sent")
            self._segments[0] = (start + len(data), end)
            return data
        return b""

    def close(self) -> None:
        """The request owns the file; ``FileBodyProducer`` must not close it."""


def stream_file(file: IO[bytes], length: int) -> FileBodyProducer:
    """The whole spooled body as a producer (nothing changed)."""
    return splice(file, length, None, b"")


def splice(file: IO[bytes], length: int, part: Part | None, value: bytes) -> FileBodyProducer:
    """A producer of the body with ``part``'s value replaced by ``value``."""
    segments: list[tuple[int, int] | bytes] = (
        [(0, length)] if part is None else [(0, part.start), value, (part.end, length)])
    reader = _SpliceReader(file, segments)
    producer = FileBodyProducer(reader, readSize=CHUNK)
    producer.length = reader.length
    return producer
