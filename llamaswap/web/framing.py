# -*- test-case-name: tests.test_framing -*-
"""Where each request on a connection begins and ends, read from the raw bytes.

``RequestFramer`` follows an HTTP/1.1 request stream as it arrives: it holds each request
head until it is complete, checks it (``web/headcheck.py`` says what is refused and why),
and lets it through whole; it counts ``Content-Length`` bodies and reads the chunk-size
lines of chunked ones, so that it knows where the next pipelined request starts. It is the
part of ``web/strict.py`` that needs no Twisted: pure bookkeeping over bytes.

What it lets through is exactly what twisted.web's own parser accepts (the same request
line, header name, value, length and chunk rules), so twisted.web never reaches its own
refusal path for a head or a chunk: every refusal is found here first, as soon as the bytes
show it, and answered by the channel in llamaswap's envelope. One deliberate difference:
obsolete line folding (a header line starting with a space or tab) is refused with 400, as
RFC 9112 §5.2 allows, rather than joined.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from llamaswap.web.headcheck import (
    AUTHORITY,
    MALFORMED,
    Refusal,
    Target,
    bare_line_ending,
    chunk_size_refusal,
    oversized_head,
    review_head,
    too_many_headers,
)

MAX_CHUNK_LINE = 1024
"""The longest chunk-size line taken (twisted.web's limit)."""
MAX_TRAILERS = 2**16
"""The most bytes of trailer fields taken after a chunked body (twisted.web's limit)."""

BARE_LINE_ENDING = Refusal(400, "request lines must end with CRLF")
FOLDED = Refusal(400, "a header line starts with whitespace (obsolete line folding)")
BAD_CHUNK = Refusal(400, "malformed chunk in a chunked request body")

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
# A head as twisted.web takes it: a token method, a target of bytes 33 to 176, HTTP/1.0 or
# 1.1, then fields of a token name and a value without CR, LF or NUL, each line CRLF-ended.
_HEAD = re.compile(rb"([" + _TCHAR + rb"]++) ([\x21-\xb0]++) HTTP/1\.[01]"
                   rb"((?:\r\n[" + _TCHAR + rb"]++:[^\r\n\x00]*+)*+)\r\n")
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_CHUNK_EXT_BYTES = b"\t" + bytes(range(32, 127)) + bytes(range(128, 256))
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")

# States of the stream.
HEAD, LENGTH, SIZE, DATA, DATA_END, TRAILER = range(6)


@dataclass(frozen=True)
class Stop:
    """A request refused: the ``index``-th of the connection (0 for the first), with the
    target it named (for the answer's API shape). Nothing from its start on is passed."""

    index: int
    refusal: Refusal
    target: bytes


class RequestFramer:
    """Follows one connection's request stream (module docstring).

    ``feed`` takes the bytes as they arrive and returns those to hand to the HTTP parser
    now, and a ``Stop`` once a request must be refused. ``targets`` holds the target of
    each head passed on, oldest first; the channel drops the first as each request is
    answered.
    """

    def __init__(self, *, max_line: int = 16384, max_head: int = 16384,
                 max_headers: int = 500) -> None:
        self.max_line = max_line
        self.max_head = max_head
        self.max_headers = max_headers
        self.state = HEAD
        self.left = 0  # bytes still to come of the body (LENGTH) or the chunk (DATA)
        self.started = 0  # heads passed on
        self.targets: deque[bytes] = deque()
        self._held = b""  # an unfinished head or line, not passed on yet
        self._checked = 0  # how much of _held has been checked already
        self._blank_ok = True  # twisted.web skips one empty line before a request line
        self._trailers = 0
        # Heads up to this size cannot reach a size or count limit.
        self._small_head = min(max_line, max_head, 4 * max_headers)

    @property
    def announced(self) -> int | None:
        """Bytes of the current chunk still to come, while one is being read."""
        return self.left if self.state == DATA else None

    def release_head(self) -> bytes:
        """Give back the start of a head held so far, to be fed again (``b""`` if none):
        the channel feeds it anew once the requests before it are answered, so that it
        arrives as the new request's first bytes."""
        if self.state != HEAD:
            return b""
        held, self._held, self._checked = self._held, b"", 0
        return held

    def feed(self, data: bytes) -> tuple[bytes, Stop | None]:
        if self.state == HEAD and not self._held:  # the usual read: one whole request
            stop_at = data.find(b"\r\n\r\n")
            if stop_at > 0 and data[:2] != b"\r\n":
                verdict = self._head(data, 0, stop_at + 2)
                if (type(verdict) is tuple and verdict[0] is None
                        and stop_at + 4 + verdict[2] == len(data)):
                    self.started += 1
                    self.targets.append(verdict[1])
                    self._blank_ok = True
                    return data, None
        return self._feed(data)

    def _feed(self, data: bytes) -> tuple[bytes, Stop | None]:
        buf = self._held + data if self._held else data
        self._held = b""
        end = len(buf)
        pos = 0
        out: list[bytes] = []  # pieces passed on, when a head was rewritten
        mark = 0  # buf[mark:pos] is passed on as it is
        while pos < end:
            state = self.state
            if state == HEAD:
                if buf.startswith(b"\r\n", pos) and self._blank_ok:
                    pos += 2
                    self._blank_ok = False
                    continue
                stop_at = buf.find(b"\r\n\r\n", max(pos, pos + self._checked - 3))
                if stop_at == -1:
                    if buf[pos:] in (b"\r", b"\r\n"):  # the end of an empty line, perhaps
                        refusal = None if self._blank_ok else MALFORMED
                    else:
                        refusal = self._partial_head(buf, pos)
                    if refusal is not None:
                        return self._stop(buf, out, mark, pos, refusal, self._target_of(buf, pos))
                    self._checked = end - pos
                    self._held = buf[pos:]
                    break
                self._checked = 0
                verdict = self._head(buf, pos, stop_at + 2)
                if isinstance(verdict, Refusal):
                    return self._stop(buf, out, mark, pos, verdict, self._target_of(buf, pos))
                rewritten, target, length = verdict
                if rewritten is not None:  # pass the new head instead
                    out.append(buf[mark:pos])
                    out.append(rewritten)
                    mark = stop_at + 4
                pos = stop_at + 4
                self.started += 1
                self.targets.append(target)
                self._blank_ok = True
                if length == -1:
                    self.state = SIZE
                elif length > 0:
                    self.state, self.left = LENGTH, length
            elif state == LENGTH or state == DATA:
                take = min(self.left, end - pos)
                pos += take
                self.left -= take
                if self.left == 0:
                    self.state = HEAD if state == LENGTH else DATA_END
            elif state == DATA_END:
                if end - pos < 2:
                    if buf[pos:] != b"\r":
                        return self._body_stop(buf, out, mark, pos, BAD_CHUNK)
                    self._held = buf[pos:]
                    break
                if not buf.startswith(b"\r\n", pos):
                    return self._body_stop(buf, out, mark, pos, BAD_CHUNK)
                pos += 2
                self.state = SIZE
            else:  # SIZE or TRAILER: a line
                line_end = buf.find(b"\r\n", pos)
                line = buf[pos:] if line_end == -1 else buf[pos:line_end]
                refusal = self._body_line(line, complete=line_end != -1)
                if refusal is not None:
                    return self._body_stop(buf, out, mark, pos, refusal)
                if line_end == -1:
                    self._held = line
                    break
                pos = line_end + 2
        passed = buf[mark:pos] if not out else b"".join(out) + buf[mark:pos]
        return passed, None

    # -- heads ----------------------------------------------------------------------------

    def _partial_head(self, buf: bytes, pos: int) -> Refusal | None:
        """What an unfinished head already shows: a bare line ending, or too many bytes."""
        bare = _BARE.search(buf, max(pos, pos + self._checked - 1))
        if bare is not None and not (bare.start() == len(buf) - 1 and buf[-1:] == b"\r"):
            return BARE_LINE_ENDING  # (a last CR may yet be followed by its LF)
        first_end = buf.find(b"\r\n", pos)
        if first_end == -1:
            if len(buf) - pos > min(self.max_line, self.max_head):
                return oversized_head(True, self.max_head)
            return None
        if first_end - pos > min(self.max_line, self.max_head):
            return oversized_head(True, self.max_head)
        last_end = buf.rfind(b"\r\n", pos)
        size = len(buf) - pos - 2 * buf.count(b"\r\n", pos)
        if size > self.max_head or len(buf) - last_end - 2 > self.max_line:
            return oversized_head(False, self.max_head)
        return None

    def _head(self, buf: bytes, start: int, end: int
              ) -> Refusal | tuple[bytes | None, bytes, int]:
        """Check the complete head ``buf[start:end]`` (its last CRLF included, the empty
        line not): a refusal, or what to pass on (``None``: the head as it came), its
        target, and its body length (-1: chunked)."""
        if end - start > self._small_head:  # (only then can a limit be reached)
            refusal = self._head_size(buf[start:end])
            if refusal is not None:
                return refusal
        well_formed = _HEAD.fullmatch(buf, start, end)
        if well_formed is None:
            return _diagnose(buf[start:end])
        method, target, fields = well_formed.groups()
        lowered = fields.lower()
        length = 0
        if b"\r\ntransfer-encoding:" in lowered:
            framing = _body_length(fields, lowered)
            if framing is None:
                return MALFORMED
            length = framing
        else:  # the usual case, inline: at most one Content-Length, of digits
            at = lowered.find(b"\r\ncontent-length:")
            if at != -1:
                at += 17
                if lowered.find(b"\r\ncontent-length:", at) != -1:
                    return MALFORMED
                line_end = fields.find(b"\r\n", at)
                value = fields[at:line_end if line_end != -1 else len(fields)].strip(b" \t")
                if not value.isdigit():
                    return MALFORMED
                length = int(value)
        at = lowered.find(b"\r\nhost:")
        if at == -1:
            hosts = []
        else:
            at += 7
            line_end = fields.find(b"\r\n", at)
            hosts = [fields[at:line_end if line_end != -1 else len(fields)].strip(b" \t")]
            if lowered.find(b"\r\nhost:", at) != -1:
                hosts.append(b"")  # (a second one: refused, whatever it says)
        if target[:1] == b"/" and (not hosts or len(hosts) == 1
                                   and AUTHORITY.fullmatch(hosts[0])):
            return None, target, length  # (review_head's usual verdict, quickly)
        verdict = review_head(method, target, hosts)
        if verdict is None:
            return None, target, length
        if isinstance(verdict, Refusal):
            return verdict
        line_end = buf.find(b"\r\n", start)
        version = buf[line_end - 8:line_end]
        return (_absolute_to_origin(method, verdict, version, fields, lowered), verdict.path,
                length)

    def _head_size(self, head: bytes) -> Refusal | None:
        """A head over a size or count limit (``oversized_head``, ``too_many_headers``)."""
        lines = head[:-2].split(b"\r\n")
        limit = min(self.max_line, self.max_head)
        if len(lines[0]) > limit:
            return oversized_head(True, self.max_head)
        if (len(head) - 2 * len(lines) > self.max_head
                or max(len(line) for line in lines) > self.max_line):
            return oversized_head(False, self.max_head)
        if len(lines) - 1 > self.max_headers:
            return too_many_headers(self.max_headers)
        return None

    def _target_of(self, buf: bytes, pos: int) -> bytes:
        """The target of a refused head, as far as it can be read (for the answer's shape)."""
        line_end = buf.find(b"\r\n", pos, pos + self.max_line + 2)
        line = buf[pos:line_end if line_end != -1 else pos + self.max_line]
        parts = line.split(b" ", 2)
        return parts[1] if len(parts) > 1 and parts[1][:1] == b"/" else b"/"

    # -- chunked bodies ---------------------------------------------------------------------

    def _body_line(self, line: bytes, *, complete: bool) -> Refusal | None:
        """Check a chunk-size or trailer line (``complete``: its CRLF has arrived)."""
        if (b"\r" in line or b"\n" in line) if complete else bare_line_ending(line):
            return BARE_LINE_ENDING
        if self.state == TRAILER:
            trailers = self._trailers + len(line) + (2 if complete else 1)
            if trailers > MAX_TRAILERS:
                return Refusal(431, f"the trailer fields are larger than {MAX_TRAILERS} bytes")
            if complete:
                if line:
                    self._trailers = trailers
                else:
                    self.state, self._trailers = HEAD, 0
            return None
        if len(line) >= MAX_CHUNK_LINE:
            return Refusal(400, f"a chunk-size line is longer than {MAX_CHUNK_LINE} bytes")
        if not complete:
            return None
        size, _, extension = line.partition(b";")
        if not _HEX.fullmatch(size) or (extension and extension.translate(None,
                                                                          _CHUNK_EXT_BYTES)):
            return BAD_CHUNK
        length = int(size, 16)
        refusal = chunk_size_refusal(length)
        if refusal is not None:
            return refusal
        if length == 0:
            self.state = TRAILER
        else:
            self.state, self.left = DATA, length
        return None

    # -- stopping -------------------------------------------------------------------------

    def _stop(self, buf: bytes, out: list[bytes], mark: int, pos: int, refusal: Refusal,
              target: bytes) -> tuple[bytes, Stop]:
        """Refuse the request whose head starts at ``pos``; pass on what came before it."""
        out.append(buf[mark:pos])
        return b"".join(out), Stop(self.started, refusal, target)

    def _body_stop(self, buf: bytes, out: list[bytes], mark: int, pos: int,
                   refusal: Refusal) -> tuple[bytes, Stop]:
        """Refuse the request whose body is being read; pass on its body up to ``pos``."""
        out.append(buf[mark:pos])
        target = self.targets[-1] if self.targets else b"/"
        return b"".join(out), Stop(self.started - 1, refusal, target)


def _diagnose(head: bytes) -> Refusal:
    """Why a head that is not well-formed is refused."""
    crlfs = head.count(b"\r\n")
    if head.count(b"\r") != crlfs or head.count(b"\n") != crlfs:
        return BARE_LINE_ENDING
    fields = head[head.find(b"\r\n"):-2]
    if b"\r\n " in fields or b"\r\n\t" in fields:
        return FOLDED
    return MALFORMED


def _values(fields: bytes, lowered: bytes, name: bytes) -> list[bytes]:
    """The values of every field called ``name`` (given as ``b"\\r\\nname:"``)."""
    values = []
    at = lowered.find(name)
    while at != -1:
        start = at + len(name)
        line_end = fields.find(b"\r\n", start)
        values.append(fields[start:line_end if line_end != -1 else len(fields)].strip(b" \t"))
        at = lowered.find(name, start)
    return values


def _body_length(fields: bytes, lowered: bytes) -> int | None:
    """The body's length (-1: chunked) as twisted.web reads it, or ``None`` if it refuses:
    one ``Content-Length`` of digits, or one ``Transfer-Encoding: chunked`` (``identity``
    is ignored), never both."""
    if b"\r\ntransfer-encoding:" not in lowered:  # the usual case, quickly
        at = lowered.find(b"\r\ncontent-length:") + 17
        if lowered.find(b"\r\ncontent-length:", at) != -1:
            return None
        line_end = fields.find(b"\r\n", at)
        value = fields[at:line_end if line_end != -1 else len(fields)].strip(b" \t")
        return int(value) if value.isdigit() else None
    lengths = _values(fields, lowered, b"\r\ncontent-length:")
    codings = [v.lower() for v in _values(fields, lowered, b"\r\ntransfer-encoding:")
               if v.lower() != b"identity"]
    if len(lengths) + len(codings) > 1 or any(c != b"chunked" for c in codings):
        return None
    if codings:
        return -1
    if lengths:
        return int(lengths[0]) if lengths[0].isdigit() else None
    return 0


def _absolute_to_origin(method: bytes, target: Target, version: bytes, fields: bytes,
                        lowered: bytes) -> bytes:
    """The head of an absolute-form request rewritten to origin-form, with the target's
    authority as its only ``Host`` (RFC 9112 §3.2.2)."""
    kept = [line for line, low in zip(fields.split(b"\r\n")[1:], lowered.split(b"\r\n")[1:],
                                      strict=True) if not low.startswith(b"host:")]
    lines = [b"%s %s %s" % (method, target.path, version), *kept, b"Host: " + target.host]
    return b"\r\n".join(lines) + b"\r\n\r\n"
