"""Property-based fuzzing of llamaswap's HTTP front (issue 14, proof).

Hypothesis writes request heads and bodies (methods, targets, versions, headers, framing,
JSON, forms, line endings) and raw bytes into the real site, ``LlamaSwapService.site()``,
on in-memory connections, whole and in pieces, as they arrive on a socket (the test checks
that twisted.web's parser saw the heads). For every example:

- no response of status 500 or more (llamaswap's own code never fails on input; no model
  runs here, so no 502/503 can be legitimate);
- no traceback logged (a ``log_failure`` event), by llamaswap or by Twisted;
- the site still answers ``GET /health`` on a new connection.

The budget is fixed and the examples derandomized, so CI runs the same few hundred cases
each time in seconds, with no deadline (a loaded machine cannot fail it).
``LLAMASWAP_FUZZ_EXAMPLES=5000`` runs a deeper, randomized search locally.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import FakeProcessReactor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

from llamaswap.config import parse_config
from llamaswap.logs import llamaswap_events
from llamaswap.service import LlamaSwapService
from llamaswap.web.routes import MODEL_ROUTES

_DEEP = os.environ.get("LLAMASWAP_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_DEEP or 250), deadline=None, derandomize=not _DEEP, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example])

# A model no generated name matches: nothing is ever started, so every answer is the
# front's own (no process, no upstream).
CONFIG = ("models:\n  configured-model-7f3a:\n    cmd: x --port ${PORT}\n"
          "maxRequestSize: 4096\n")

PATHS = sorted({route.path for route in MODEL_ROUTES} | {
    "/", "/health", "/wol-health", "/favicon.ico", "/v1/models", "/models", "/running",
    "/unload", "/api/models/unload", "/api/config/reload", "/api/profiles",
    "/api/profiles/active", "/logs", "/logs/stream", "/logs/stream/proxy", "/api/events",
    "/metrics", "/api/metrics/activity", "/api/metrics/stats", "/api/captures/1",
    "/api/inflight", "/ui", "/ui/", "/ui/index.html", "/upstream/x/y", "/api", "/v1",
})
METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS", b"TRACE",
           b"CONNECT", b"BREW", b"get", b"M-SEARCH"]
HEADER_VALUES: dict[bytes, list[bytes]] = {
    b"Host": [b"x", b"127.0.0.1:8080", b"", b"a b", b"[::1]"],
    b"Content-Type": [b"application/json", b"multipart/form-data; boundary=zz",
                      b"multipart/form-data", b"application/x-www-form-urlencoded",
                      b"text/plain", b"application/octet-stream"],
    b"Transfer-Encoding": [b"chunked", b"identity", b"gzip, chunked", b"CHUNKED"],
    b"Content-Length": [b"0", b"5", b"-1", b"99999999999999999999", b"1 2", b"abc"],
    b"Expect": [b"100-continue", b"x"],
    b"Connection": [b"close", b"keep-alive", b"upgrade"],
    b"Authorization": [b"Bearer k", b"Basic !!!", b"Basic " + b"A" * 40],
    b"Accept": [b"text/html", b"text/plain", b"application/json", b"*/*"],
    b"Origin": [b"http://a.example", b"null"],
    b"Access-Control-Request-Method": [b"POST"],
    b"Cookie": [b"a=b; c", b"=;=;"],
    b"X-Api-Key": [b"k"],
}
QUERY_KEYS = ["model", "api_key", "key", "stream", "page", "limit", "sort", "order",
              "no-history", "x"]

STATUS_LINE = re.compile(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3}) ")


# -- strategies --------------------------------------------------------------------------------

_text = st.text(max_size=16)
_small_bytes = st.binary(max_size=24)


def _percent(raw: bytes) -> bytes:
    return b"".join(b"%%%02X" % c if c < 0x21 or c > 0x7E or c in b"%?#/" else bytes([c])
                    for c in raw)


_segment = st.one_of(
    st.sampled_from([b"..", b".", b"%00", b"a%00.js", b"%2e%2e", b"%2F", b"%ff", b"",
                     b"index.html", b"configured-model", b"%zz"]),
    _small_bytes.map(_percent),
    _small_bytes,  # raw: controls, spaces, high bytes in the request line
)


@st.composite
def _target(draw: Any) -> bytes:
    path = draw(st.sampled_from(PATHS)).encode()
    for segment in draw(st.lists(_segment, max_size=3)):
        path += b"/" + segment
    if draw(st.booleans()):
        fields = draw(st.lists(st.tuples(st.sampled_from(QUERY_KEYS), _text), max_size=3))
        path += b"?" + b"&".join(_percent(k.encode()) + b"=" + _percent(v.encode("utf-8"))
                                 for k, v in fields)
    form = draw(st.sampled_from(["origin"] * 6 + ["absolute", "star", "authority", "junk"]))
    if form == "absolute":
        scheme = draw(st.sampled_from([b"http", b"https", b"HTTP", b"ftp"]))
        host = draw(st.sampled_from([b"h", b"u:p@h", b"h:80", b"", b"[::1]"]))
        return scheme + b"://" + host + path
    if form == "star":
        return b"*"
    if form == "authority":
        return b"evil.example:443"
    if form == "junk":
        return draw(_small_bytes)
    return path


def _json_body() -> st.SearchStrategy[bytes]:
    leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text
    values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(_text, inner, max_size=3), max_leaves=12)
    request = st.fixed_dictionaries(
        {"model": _text | st.integers() | st.none()},
        optional={"messages": values, "stream": st.booleans(), "extra": values})
    deep = st.integers(200, 3000).map(lambda n: b'{"model": "m", "x": ' + b"[" * n + b"]" * n
                                      + b"}")
    return st.one_of(request.map(lambda d: json.dumps(d).encode()),
                     values.map(lambda v: json.dumps(v).encode()),
                     deep, st.integers(900, 5000).map(lambda n: b"[" * n),
                     _small_bytes.map(lambda b: b"{" + b))


def _form_body() -> st.SearchStrategy[bytes]:
    field = st.tuples(st.sampled_from(["model", "file", "x", 'a"b', ""]), _text)
    multipart = st.lists(field, max_size=4).map(lambda fields: b"".join(
        b'--zz\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (name.encode(), value.encode()) for name, value in fields) + b"--zz--\r\n")
    urlencoded = st.lists(field, max_size=4).map(lambda fields: b"&".join(
        _percent(k.encode()) + b"=" + _percent(v.encode()) for k, v in fields))
    return multipart | urlencoded


def _chunked(body: bytes, size_line: bytes | None) -> bytes:
    if size_line is not None:
        return size_line + b"\r\n" + body + b"\r\n0\r\n\r\n"
    return (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"


@st.composite
def _request(draw: Any) -> bytes:
    method = draw(st.sampled_from(METHODS) | st.binary(min_size=1, max_size=6))
    version = draw(st.sampled_from([b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/2.0", b"http/1.1",
                                                        b""]))
    line = method + b" " + draw(_target()) + (b" " + version if version else b"")
    body = draw(st.one_of(st.just(b""), _json_body(), _form_body(), st.binary(max_size=64)))
    names = draw(st.lists(st.sampled_from(sorted(HEADER_VALUES)) | _small_bytes, max_size=6))
    headers: list[tuple[bytes, bytes]] = []
    for name in names:
        known = HEADER_VALUES.get(name)
        value = draw(st.sampled_from(known) | _small_bytes if known else _small_bytes)
        headers.append((name, value))
    if draw(st.booleans()):
        headers.insert(0, (b"Host", b"x"))
    if draw(st.integers(0, 30)) == 0:
        headers.append((b"X-Big", b"b" * draw(st.integers(15000, 20000))))
    framing = draw(st.sampled_from(["length"] * 4 + ["chunked", "wrong-length", "none"]))
    if framing == "length":
        headers.append((b"Content-Length", b"%d" % len(body)))
    elif framing == "wrong-length":
        headers.append((b"Content-Length", b"%d" % draw(st.integers(0, 10_000))))
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
        size_line = draw(st.none() | st.sampled_from([b"FFFFFFFFFFFFFFFFFFFF", b"FFFFFFFF",
                                                      b"zz", b"-1", b"1;ext", b"0x10"]))
        body = _chunked(body, size_line)
    newline = b"\r\n" if draw(st.integers(0, 9)) else draw(st.sampled_from([b"\n", b"\r"]))
    head = newline.join([line, *(name + b": " + value for name, value in headers)])
    return head + newline + newline + body


@st.composite
def _pieces(draw: Any, data: bytes) -> list[bytes]:
    """``data`` whole (one read) or cut at a few places (several reads)."""
    if not data or draw(st.booleans()):
        return [data]
    cuts = sorted(set(draw(st.lists(st.integers(1, len(data)), min_size=1, max_size=4))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


# -- the front under test ------------------------------------------------------------------------


class Front:
    """The real site, fed on in-memory connections; records what would fail an example."""

    def __init__(self) -> None:
        config = parse_config(CONFIG, "/nonexistent/llamaswap-fuzz.yaml")
        self.service = LlamaSwapService(config, FakeProcessReactor())
        self.site = self.service.site()
        self.failures: list[str] = []
        self.statuses: list[int] = []

    def observe(self, event: dict[str, Any]) -> None:
        failure = event.get("log_failure")
        if failure is not None:
            self.failures.append(failure.getTraceback())
        if event.get("log_namespace") == "llamaswap.access":
            self.statuses.append(int(event["status"]))

    def serve(self, pieces: list[bytes]) -> bytes:
        channel = self.site.buildProtocol(None)
        # lenient: like a socket, pausing a transport that is closing is allowed (twisted.web
        # pauses reads when pipelined bytes pile up behind a request that closes the channel).
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555),
                                    lenient=True)
        channel.makeConnection(transport)
        for piece in pieces:
            channel.dataReceived(piece)
        written = bytes(transport.value())
        channel.connectionLost(Failure(ConnectionDone()))
        return written

    def check(self, pieces: list[bytes]) -> None:
        self.failures.clear()
        self.statuses.clear()
        written = self.serve(pieces)
        answered = [int(s) for s in STATUS_LINE.findall(written)]
        assert not [s for s in answered + self.statuses if s >= 500], (written[:600], pieces)
        assert not self.failures, self.failures[0]
        health = self.serve([b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"])
        assert health.startswith(b"HTTP/1.1 200") and health.endswith(b"\r\n\r\nOK"), health


@pytest.fixture
def front(monkeypatch: pytest.MonkeyPatch) -> Iterator[Front]:
    f = Front()
    globalLogPublisher.addObserver(f.observe)
    llamaswap_events.addObserver(f.observe)
    yield f
    llamaswap_events.removeObserver(f.observe)
    globalLogPublisher.removeObserver(f.observe)


@pytest.fixture
def parsers(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many head lines twisted.web's parser took."""
    counts = {"lines": 0}
    line_received = HTTPChannel.lineReceived

    def counting_line_received(self: Any, line: bytes) -> Any:
        counts["lines"] += 1
        return line_received(self, line)

    monkeypatch.setattr(HTTPChannel, "lineReceived", counting_line_received)
    return counts


def test_fuzzed_requests_get_no_5xx_and_no_traceback(
        front: Front, parsers: dict[str, int]) -> None:
    @FUZZ
    @given(st.data())
    def run(data: Any) -> None:
        requests = data.draw(st.lists(_request(), min_size=1, max_size=3))  # pipelined
        front.check(data.draw(_pieces(b"".join(requests))))

    run()
    assert parsers["lines"] >= 20, parsers


def _mutated(data: bytes, edits: list[tuple[int, bytes]]) -> bytes:
    for at, insert in edits:
        at %= len(data) + 1
        data = data[:at] + insert + data[at + 1:]
    return data


_valid = st.sampled_from([
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 17\r\n\r\n{\"model\": \"abc\"}",
    b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: multipart/form-data; boundary=zz\r\n\r\n"
    b"2f\r\n--zz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n\r\n0\r\n\r\n",
    b"PUT /api/profiles/active HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\n"
    b"{\"name\": null}",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
])


def test_fuzzed_bytes_get_no_5xx_and_no_traceback(front: Front) -> None:
    """Raw bytes, and valid requests with bytes replaced: what no grammar writes."""

    @FUZZ
    @given(st.data())
    def run(data: Any) -> None:
        raw = data.draw(st.one_of(
            st.binary(max_size=300),
            st.builds(_mutated, _valid,
                      st.lists(st.tuples(st.integers(0, 400), st.binary(max_size=3)),
                               min_size=1, max_size=4))))
        front.check(data.draw(_pieces(raw)))

    run()
