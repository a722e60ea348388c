"""Bad input to the real llamaswap site (issue 14, items 4, 6, 7, 9, 10, 13): each gets a
clear answer in the error envelope, with no traceback, and the site keeps serving.

The site is ``LlamaSwapService.site()`` itself (``HardenedSite``, ``AccessLoggedRequest``,
the whole resource tree) on in-memory connections, over a reactor that runs no process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from fakes import FakeProcessReactor
from twisted.internet import reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from llamaswap import events
from llamaswap.activity import Capture, capture_view, frozen_headers
from llamaswap.config import parse_config
from llamaswap.logs import attach, detach, llamaswap_events
from llamaswap.service import LlamaSwapService

CONFIG = "models:\n  configured-model:\n    cmd: x --port ${PORT}\n"


class Site:
    """A service's site, answering raw requests on fresh in-memory connections."""

    def __init__(self, config: str = CONFIG) -> None:
        self.reactor = FakeProcessReactor()
        self.service = LlamaSwapService(parse_config(config, "c.yaml"), self.reactor)
        self.site = self.service.site()
        self._channels: list[Any] = []

    def send(self, data: bytes) -> bytes:
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(data)
        self._channels.append(channel)
        self.last = transport
        return bytes(transport.value())

    def request(self, method: bytes, target: bytes, body: bytes = b"",
                headers: bytes = b"") -> tuple[int, dict[bytes, bytes], Any]:
        data = (b"%s %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s"
                % (method, target, headers, len(body), body))
        return parse(self.send(data))

    def close(self) -> None:
        for channel in self._channels:
            channel.connectionLost(Failure(ConnectionDone()))


def parse(written: bytes) -> tuple[int, dict[bytes, bytes], Any]:
    """The status, headers and JSON body of one response with a Content-Length."""
    head, _, rest = written.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = rest[:int(headers[b"content-length"])]
    is_json = headers.get(b"content-type", b"").startswith(b"application/json")
    return int(lines[0].split()[1]), headers, json.loads(body) if is_json else body


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


def assert_envelope(body: Any, status: int, code: str | None = None) -> None:
    assert isinstance(body, dict) and body["src"] == "llamaswap", body
    if code is not None:
        assert body["error"]["code"] == code, body


# -- item 4: deep JSON -------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [300, 1000, 100_000])
def test_deeply_nested_json_is_400_not_a_recursion_error(site: Site, depth: int) -> None:
    body = b'{"model": "configured-model", "x": ' + b"[" * depth + b"]" * depth + b"}"
    status, _, answer = site.request(b"POST", b"/v1/chat/completions", body,
                                     b"Content-Type: application/json\r\n")
    assert status == 400
    assert_envelope(answer, 400, "invalid_request_body")
    assert "deeper than 256 levels" in answer["error"]["message"]
    assert site.reactor.processes == []  # no model was started for it


def test_deep_json_in_a_profile_change_is_400(site: Site) -> None:
    status, _, answer = site.request(b"PUT", b"/api/profiles/active", b"[" * 5000)
    assert status == 400
    assert_envelope(answer, 400)


def test_json_nested_within_the_bound_is_served(site: Site) -> None:
    nested = b"[" * 200 + b"]" * 200
    body = b'{"model": "unknown-model", "x": ' + nested + b"}"
    status, _, answer = site.request(b"POST", b"/v1/chat/completions", body,
                                     b"Content-Type: application/json\r\n")
    assert status == 404 and answer["error"]["code"] == "model_not_found"  # read, routed


# -- items 6 and 7: methods and paths no resource expects --------------------------------------


def _paths(resource: Resource, prefix: bytes = b"") -> Iterator[tuple[bytes, Resource]]:
    for name, child in resource.children.items():
        path = prefix + b"/" + name
        yield path, child
        yield from _paths(child, path)


@pytest.mark.parametrize("method", [b"PUT", b"PATCH", b"DELETE", b"TRACE", b"BREW"])
def test_no_path_answers_an_unexpected_method_with_twisted_webs_html(
        site: Site, method: bytes) -> None:
    paths = [path for path, _ in _paths(site.service.resource)]
    assert b"/ui" in paths and b"/v1/chat/completions" in paths and b"/api" in paths
    for path in [*paths, b"/ui/", b"/ui/index.html", b"/"]:
        status, headers, answer = site.request(method, path)
        assert status in (400, 404, 405), (path, status, answer)
        assert isinstance(answer, dict), (path, answer)  # an envelope, not an HTML page
        if status == 405:
            assert headers[b"allow"], path


@pytest.mark.parametrize("method", [b"PUT", b"PATCH", b"BREW", b"POST", b"DELETE"])
@pytest.mark.parametrize("path", [b"/ui/", b"/ui/index.html", b"/ui/app.css"])
def test_the_ui_answers_other_methods_with_405(site: Site, method: bytes, path: bytes) -> None:
    status, headers, answer = site.request(method, path)
    assert status == 405
    assert headers[b"allow"] == b"GET, HEAD"
    assert_envelope(answer, 405, "method_not_allowed")


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"POST", b"PUT"])
def test_inner_nodes_of_the_tree_are_json_404s(site: Site, method: bytes) -> None:
    for path in (b"/api", b"/api/metrics", b"/v1/audio"):
        written = site.send(b"%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (method, path))
        assert written.startswith(b"HTTP/1.1 404"), (path, written)
        if method != b"HEAD":
            assert_envelope(parse(written)[2], 404, "not_found")


@pytest.mark.parametrize("path", [
    b"/ui/%00/..", b"/ui/index.html%00.js", b"/ui/%00", b"/ui/a%00b/c", b"/ui/nothing.js",
])
def test_ui_paths_with_nul_or_no_file_are_json_404s(site: Site, path: bytes) -> None:
    status, _, answer = site.request(b"GET", path)
    assert status == 404
    assert_envelope(answer, 404)


@pytest_twisted.ensureDeferred
async def test_the_ui_still_serves_its_files(site: Site) -> None:
    site.send(b"GET /ui/index.html HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(200):  # a static file is written by twisted's cooperator, on the reactor
        if b"</html>" in site.last.value().lower():
            break
        await deferLater(reactor, 0.01)
    written = site.last.value()
    assert written.startswith(b"HTTP/1.1 200") and b"</html>" in written.lower()


# -- item 9: absolute-form targets on the real site --------------------------------------------


def test_absolute_form_reaches_the_endpoint_of_its_path(site: Site) -> None:
    written = site.send(b"GET http://llamaswap.example/health HTTP/1.1\r\n"
                        b"Host: llamaswap.example\r\n\r\n")
    assert written.startswith(b"HTTP/1.1 200") and written.endswith(b"OK")


def test_two_host_headers_are_400_on_the_real_site(site: Site) -> None:
    status, _, answer = parse(site.send(b"GET /health HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"))
    assert status == 400
    assert_envelope(answer, 400)


# -- item 10: two model fields -----------------------------------------------------------------


def _multipart(*fields: tuple[str, str]) -> bytes:
    parts = [f'--b0undary\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
             for name, value in fields]
    return ("".join(parts) + "--b0undary--\r\n").encode()


def test_a_multipart_body_with_two_model_fields_is_400(site: Site) -> None:
    body = _multipart(("model", "configured-model"), ("file", "x"), ("model", "other"))
    status, _, answer = site.request(
        b"POST", b"/v1/audio/transcriptions", body,
        b"Content-Type: multipart/form-data; boundary=b0undary\r\n")
    assert status == 400
    assert_envelope(answer, 400, "invalid_request_body")
    assert "ambiguous model" in answer["error"]["message"]
    assert site.reactor.processes == []


def test_a_form_with_two_model_fields_is_400(site: Site) -> None:
    status, _, answer = site.request(
        b"POST", b"/v1/chat/completions", b"model=configured-model&model=other",
        b"Content-Type: application/x-www-form-urlencoded\r\n")
    assert status == 400
    assert "ambiguous model" in answer["error"]["message"]


# -- item 13: credentials in query strings -----------------------------------------------------

SECRET = "s3cr3t-value-in-the-url"


@pytest.fixture
def keyed() -> Iterator[Site]:
    s = Site(CONFIG + "apiKeys: [the-real-key]\n")
    s.service.observability.start()  # /logs and events follow the proxy log
    attach(s.service.log_rules)  # what starting the service does for its log
    yield s
    detach(s.service.log_rules)
    s.service.observability.stop()
    s.close()


def test_query_credentials_never_reach_the_access_log_logs_or_events(keyed: Site) -> None:
    lines: list[str] = []
    sent: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "llamaswap.access" and "/v1/models" in event["path"]:
            lines.append(event["_text"])
            lines.append(event["path"])

    unsubscribe = keyed.service.observability.bus.subscribe(sent.append)
    llamaswap_events.addObserver(on_event)
    try:
        for query in (f"api_key={SECRET}", f"key={SECRET}&model=m", f"x=1&access_token={SECRET}",
                      f"Api-Key={SECRET}", f"api%5Fkey={SECRET}", f"token={SECRET}#frag"):
            status, _, _ = keyed.request(b"GET", b"/v1/models?" + query.encode())
            assert status == 401
        logs = keyed.send(b"GET /logs HTTP/1.1\r\nHost: x\r\n"
                          b"Authorization: Bearer the-real-key\r\n\r\n")
    finally:
        llamaswap_events.removeObserver(on_event)
        unsubscribe()
    assert len(lines) == 12 and all("[REDACTED]" in line for line in lines), lines
    assert "model=m" in lines[2]  # other parameters stay as sent
    assert b"/v1/models?api_key=[REDACTED]" in logs
    streamed = json.dumps([m for m in sent if m.get("type") == events.LOG_DATA])
    assert "/v1/models?" in streamed
    for text in (*lines, logs.decode("latin-1"), streamed):
        assert SECRET not in text


def test_captures_redact_credentials_in_url_headers() -> None:
    capture = Capture(1, "/v1/chat/completions", "POST", frozen_headers([
        (b"Referer", [f"http://ui.example/chat?api_key={SECRET}&tab=2".encode()]),
        (b"Authorization", [b"Bearer the-real-key"])]), b"{}")
    capture.resp_headers = frozen_headers([(b"Location", [f"/x?token={SECRET}".encode()])])
    capture.resp_body = b""
    view = capture_view(capture.frozen())
    assert view["req_headers"]["Referer"] == "http://ui.example/chat?api_key=[REDACTED]&tab=2"
    assert "Authorization" not in view["req_headers"]  # credentials left out altogether
    assert view["resp_headers"]["Location"] == "/x?token=[REDACTED]"



# -- found by the fuzzer: header values that are not UTF-8 ---------------------------------------


@pytest.mark.parametrize(("method", "target", "header"), [
    (b"POST", b"/v1/chat/completions", b"Content-Type: \x80application/json\r\n"),
    (b"POST", b"/v1/audio/transcriptions", b"Content-Type: multipart/form-data; boundary=\xff\r\n"),
    (b"GET", b"/v1/models", b"Origin: http://\xe9.example\r\n"),
    (b"GET", b"/no-such-path", b"Accept: text/\xff\r\n"),
    (b"GET", b"/logs", b"Accept: \xfftext/html\r\n"),
])
def test_header_values_that_are_not_utf8_are_read_as_bytes(
        site: Site, method: bytes, target: bytes, header: bytes) -> None:
    body = b'{"model": "x"}'
    written = site.send(b"%s %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s"
                        % (method, target, header, len(body), body))
    assert int(written.split(b" ")[1]) < 500, written
