# -*- test-case-name: tests.test_headcheck -*-
"""What llamaswap refuses in a request head, and how it reads an absolute-form target.

Pure functions over bytes, no Twisted: ``web/strict.py`` calls them from the channel, for
heads as twisted.web's line parser hands them over.
Each refusal names the status RFC 9110/9112 gives for it (``docs/reliability.md``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CHUNK_SIZE = 2**63 - 1
"""The largest chunk size taken (a signed 64-bit length, as most HTTP stacks use)."""

# host = IP-literal / IPv4address / reg-name, then an optional port (RFC 3986 §3.2.2).
AUTHORITY = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?")
_SCHEME = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://")
_SERVED_SCHEMES = (b"http", b"https")


@dataclass(frozen=True)
class Refusal:
    """A request that is answered with an error before any resource sees it."""

    status: int
    message: str


@dataclass(frozen=True)
class Target:
    """An absolute-form target read as resources expect it: its path (origin-form), and its
    authority, which replaces the ``Host`` header (RFC 9112 §3.2.2)."""

    path: bytes
    host: bytes


def review_head(method: bytes, target: bytes, hosts: list[bytes]) -> Target | Refusal | None:
    """How to read a request head: ``None`` as it is, a ``Target`` for an absolute-form
    one, or a ``Refusal`` (400).

    ``hosts`` are the values of every ``Host`` header. More than one, or one that is not an
    authority, is refused (RFC 9112 §3.2). Targets: origin-form (``/path?query``) as is,
    absolute-form (``http://host/path``) read as its path with the host as ``Host``, ``*``
    for ``OPTIONS`` only; anything else (authority-form included: llamaswap is no proxy)
    is refused.
    """
    if len(hosts) > 1:
        return Refusal(400, "more than one Host header")
    if hosts and not AUTHORITY.fullmatch(hosts[0]):
        return Refusal(400, "the Host header is not a valid host")
    if target[:1] == b"/":
        return None
    if target == b"*":
        if method == b"OPTIONS":
            return None
        return Refusal(400, "the request target * is for OPTIONS only")
    scheme = _SCHEME.match(target)
    if scheme is None:
        return Refusal(400, "the request target must be a path starting with /")
    if scheme.group(1).lower() not in _SERVED_SCHEMES:
        return Refusal(400, "an absolute request target must be an http or https URL")
    rest = target[scheme.end():]
    end = len(rest)
    for delimiter in (b"/", b"?", b"#"):
        found = rest.find(delimiter)
        if found != -1:
            end = min(end, found)
    authority, path = rest[:end], rest[end:]
    if b"@" in authority:
        return Refusal(400, "the request target must not carry user information")
    if not authority or not AUTHORITY.fullmatch(authority):
        return Refusal(400, "the request target's host is not a valid host")
    if path[:1] != b"/":
        path = b"/" + path
    return Target(path, authority)


def bare_line_ending(unparsed: bytes) -> bool:
    """Whether the not yet parsed part of a request head holds a bare LF or CR.

    The line parser splits a head at CRLF; what it still holds has none, so any LF in it
    is bare, and any CR but a last one (whose LF may be on its way). Lines ending in a
    bare LF are refused at once (RFC 9112 §2.2 lets a server choose) instead of waiting
    for a CRLF that may never come.
    """
    return b"\n" in unparsed or b"\r" in unparsed[:-1]


def oversized_head(request_line: bool, limit: int) -> Refusal:
    """A request line (414) or header section (431) over ``limit`` bytes."""
    if request_line:
        return Refusal(414, f"the request line is longer than {limit} bytes")
    return Refusal(431, f"the request header fields are larger than {limit} bytes")


def too_many_headers(limit: int) -> Refusal:
    return Refusal(431, f"the request has more than {limit} header fields")


def chunk_size_refusal(size: int) -> Refusal | None:
    """A chunk size no body can have: refused as soon as it is read, not after waiting
    for bytes that will never come."""
    if size > MAX_CHUNK_SIZE:
        return Refusal(400, f"a chunk size is over the maximum of {MAX_CHUNK_SIZE} bytes")
    return None


MALFORMED = Refusal(400, "malformed HTTP request")
"""twisted.web's own refusals (a bad request line, header or chunk), which say no more."""
