"""Every management document llamaswap builds decodes into llama-swap's types
(``llama_swap_types``), field names and JSON types, before any HTTP is involved."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from fakes import make_config, model
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.components import Componentized
from twisted.web.http_headers import Headers

from llamaswap.activity import FrozenCapture, capture_view
from llamaswap.compat.accesslog import client_ip, is_logged, request_line
from llamaswap.compat.activity import activity_entry, activity_page, parse_activity_query
from llamaswap.compat.gotypes import go_bytes, go_duration, go_int, go_time, parse_go_time
from llamaswap.compat.headers import header_map, scrub_query
from llamaswap.compat.info import session_headers_of, ui_config, version_info
from llamaswap.compat.stats import histogram
from llamaswap.context import context_of
from llamaswap.observability import Observability
from tests.compat import llama_swap_types as T

ROW: dict[str, Any] = {
    "id": 7, "ts": 1764919421.25, "model": "m", "endpoint": "/v1/chat/completions",
    "method": "POST", "status": 200, "duration_ms": 1966.6, "ttfb_ms": 12.5, "wait_ms": None,
    "input_tokens": 12, "output_tokens": 30, "cached_tokens": None, "prompt_per_second": 812.5,
    "tokens_per_second": None, "client": "10.0.0.7", "error": None, "has_capture": True,
    "content_type": "text/event-stream", "draft_tokens": None, "draft_acc_tokens": None}


def test_an_activity_row_is_an_activity_log_entry() -> None:
    entry = activity_entry(ROW)
    T.assert_decodes(entry, T.ACTIVITY_LOG_ENTRY)
    assert entry["duration_ms"] == 1966  # a Go int: 1966.6 would be refused
    assert entry["timestamp"] == "2025-12-05T07:23:41.25Z"
    assert entry["tokens"] == {"cache_tokens": -1, "draft_tokens": -1, "draft_acc_tokens": -1,
                               "input_tokens": 12, "output_tokens": 30,
                               "prompt_per_second": 812.5, "tokens_per_second": -1.0}
    assert (entry["req_path"], entry["resp_status_code"], entry["resp_content_type"]) == (
        "/v1/chat/completions", 200, "text/event-stream")
    assert "error_msg" not in entry  # omitempty
    failed = activity_entry({**ROW, "status": 502, "error": "upstream died",
                             "content_type": None})
    T.assert_decodes(failed, T.ACTIVITY_LOG_ENTRY)
    assert failed["error_msg"] == "upstream died" and failed["resp_content_type"] == ""


def test_a_page_is_an_activity_page() -> None:
    page = activity_page([ROW, {**ROW, "id": 6}], page=1, limit=2, total=5)
    T.assert_decodes(page, T.ACTIVITY_PAGE)
    assert page["total_pages"] == 3
    empty = activity_page([], page=1, limit=25, total=0)
    T.assert_decodes(empty, T.ACTIVITY_PAGE)
    assert empty["data"] == [] and empty["total_pages"] == 0


def test_histograms_and_stats_are_llama_swaps() -> None:
    h = histogram([10.0, 20.5, 30.0, 0.0, -1.0])
    T.assert_decodes(h, T.HISTOGRAM)
    assert sum(h["bins"]) == 3  # type: ignore[index]
    stats = {"total_requests": 3, "total_input_tokens": 0, "total_output_tokens": 9,
             "total_cache_tokens": 0, "prompt_histogram": None, "gen_histogram": h}
    T.assert_decodes(stats, T.ACTIVITY_STATS)


@pytest.mark.parametrize(("args", "message"), [
    ({b"limit": [b"1000"]}, "limit must be between 1 and 999"),
    ({b"limit": [b"x"]}, "invalid limit"),
    ({b"page": [b"0"]}, "page must be >= 1"),
    ({b"sort": [b"nope"]}, "invalid sort column"),
    ({b"order": [b"up"]}, "order must be asc or desc"),
    ({b"start": [b"yesterday"]}, "invalid 'start' timestamp, use RFC3339 format"),
    ({b"start": [b"2026-01-02T00:00:00Z"], b"end": [b"2026-01-01T00:00:00Z"]},
     "start must be before end"),
    ({b"min_id": [b"0"]}, "min_id must be >= 1"),
    ({b"min_id": [b"5"], b"max_id": [b"4"]}, "min_id must be <= max_id"),
])
def test_bad_activity_queries_get_llama_swaps_messages(args: dict[bytes, list[bytes]],
                                                       message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        parse_activity_query(args)


def test_activity_queries_take_llama_swaps_parameters() -> None:
    query = parse_activity_query({b"model": [b"a", b" b ", b""], b"limit": [b"10"],
                                  b"page": [b"2"], b"sort": [b"gen_speed"],
                                  b"order": [b"ASC"], b"start": [b"2026-01-01T00:00:00Z"],
                                  b"min_id": [b"3"]})
    assert (query.models, query.limit, query.page, query.sort, query.descending) == (
        ["a", "b"], 10, 2, "gen_speed", False)
    assert query.start == parse_go_time("2026-01-01T00:00:00+00:00") and query.min_id == 3
    defaults = parse_activity_query({})
    assert (defaults.limit, defaults.page, defaults.sort, defaults.descending) == (
        25, 1, "id", True)


def _frozen(resp_headers: bytes | None, resp_body: bytes) -> FrozenCapture:
    return (4, "/v1/chat/completions", "POST",
            b"Authorization: Bearer sk-1\r\nX-Api-Key: k\r\nCookie: c=1\r\n"
            b"Content-Type: application/json\r\nReferer: http://ui/?api_key=s&tab=2\r\n",
            b'{"model":"m"}', resp_headers, resp_body)


def test_a_capture_is_a_req_resp_capture_with_base64_bodies_and_no_credentials() -> None:
    capture = capture_view(_frozen(b"Content-Type: text/event-stream\r\n"
                                   b"Content-Encoding: gzip\r\nSet-Cookie: s=1\r\n",
                                   b"data: \xff\n\n"))
    T.assert_decodes(capture, T.REQ_RESP_CAPTURE)
    assert base64.b64decode(capture["req_body"]) == b'{"model":"m"}'
    assert base64.b64decode(capture["resp_body"]) == b"data: \xff\n\n"  # bytes, not text
    assert capture["req_headers"] == {"Content-Type": "application/json",
                                      "Referer": "http://ui/?api_key=[REDACTED]&tab=2"}
    assert capture["resp_headers"] == {"Content-Type": "text/event-stream"}
    no_answer = capture_view(_frozen(None, b""))
    T.assert_decodes(no_answer, T.REQ_RESP_CAPTURE)
    assert (no_answer["resp_headers"], no_answer["resp_body"]) == (None, None)


def test_header_maps_keep_the_first_value_and_drop_secrets() -> None:
    assert header_map([(b"X-Dup", [b"one", b"two"]), (b"Proxy-Authorization", [b"p"]),
                       (b"Set-Cookie", [b"a"]), (b"Origin", [b"http://h?token=t"])]) == {
        "X-Dup": "one", "Origin": "http://h?token=[REDACTED]"}
    assert scrub_query("/x?key=1&model=m&access_token=2") == "/x?model=m"


class _Router:
    def on_stop(self, listener: Any) -> None:
        pass

    def on_swap(self, listener: Any) -> None:
        pass

    def circuit_open(self, model_id: str) -> bool:
        return False

    def in_flight(self, model_id: str) -> int:
        return 2

    def queued(self) -> int:
        return 0


class _Request(Componentized):
    def __init__(self) -> None:
        super().__init__()
        self.path = b"/v1/chat/completions"
        self.method = b"POST"
        context_of(self).model = "m"
        self.content = io.BytesIO(b"{}")
        self.requestHeaders = Headers({b"user-agent": [b"curl/8"],
                                       b"authorization": [b"Bearer sk-1"],
                                       b"x-forwarded-for": [b"192.0.2.1, 10.0.0.1"]})
        self.responseHeaders = Headers()
        self.code = 200
        self.finished: Deferred[None] = Deferred()

    def getClientAddress(self) -> IPv4Address:
        return IPv4Address("TCP", "10.0.0.7", 5000)

    def notifyFinish(self) -> Deferred[None]:
        return self.finished


def test_inflight_events_are_llama_swaps_entries_with_request_headers() -> None:
    clock = Clock()
    clock.advance(1764919421)
    obs = Observability(make_config(model("m")), {}, _Router(), clock)
    obs.store = type("S", (), {"add": lambda self, row: Deferred()})()  # type: ignore[assignment]
    seen: list[dict[str, Any]] = []
    obs.bus.subscribe(lambda e: seen.append({"type": e["type"], **json.loads(e["data"])}))
    request = _Request()
    exchange = obs.watch(request, "http://127.0.0.1:9/v1/chat/completions")  # type: ignore[arg-type]
    clock.advance(1.5)
    exchange.response(200, Headers({b"content-type": [b"text/event-stream"],
                                    b"set-cookie": [b"s=1"]}))
    T.assert_decodes(seen[0], T.INFLIGHT_UPSERT)
    upsert = seen[1]
    T.assert_decodes(upsert, T.INFLIGHT_UPSERT)
    entry = upsert["request"]
    assert entry["req_headers"] == {"User-Agent": "curl/8", "X-Forwarded-For":
                                    "192.0.2.1, 10.0.0.1"}
    assert entry["resp_headers"] == {"Content-Type": "text/event-stream"}
    assert entry["remote_ip"] == "192.0.2.1" and entry["elapsed_ms"] == 1500
    snapshot = obs.in_flight_snapshot()
    T.assert_decodes(snapshot, T.INFLIGHT_SNAPSHOT)
    request.finished.callback(None)
    T.assert_decodes(seen[-1], T.INFLIGHT_REMOVE)


def test_model_status_is_llama_swaps_api_model_list_with_peers() -> None:
    from llamaswap.config import PeerConfig

    config = make_config(model("a", aliases=("x",)), model("b"), peers={
        "box": PeerConfig(id="box", proxy="http://box:8080", models=("q",))})
    processes = {}
    for model_id, cfg in config.models.items():
        processes[model_id] = type("P", (), {"model": cfg, "pid": None, "model_pid": None,
                                             "last_error": None,
                                             "state": type("S", (), {"value": "stopped"})(),
                                             "add_observer": lambda self, f: None})()
    obs = Observability(config, processes, _Router(), Clock())  # type: ignore[arg-type]
    status = obs.model_status()
    T.assert_decodes(status, T.ListOf(T.API_MODEL))
    assert [(m["id"], m["peerID"]) for m in status] == [("a", ""), ("b", ""), ("box/q", "box")]
    assert status[0]["aliases"] == ["x"] and "aliases" not in status[1]  # omitempty


def test_version_and_ui_config() -> None:
    T.assert_decodes(version_info("1.2.3", {}), T.VERSION_INFO)
    assert version_info("1.2.3", {"LLAMASWAP_COMMIT": "abc"})["commit"] == "abc"
    T.assert_decodes(ui_config(), T.UI_CONFIG)
    assert ui_config()["activity"]["session_id"] == ["X-Session-ID", "X-Litellm-Session-Id"]
    assert ui_config([])["activity"]["session_id"] == []
    ui = type("UI", (), {"activity": {"session_id": ["X-Trace"]}})()
    assert session_headers_of(type("C", (), {"ui": ui})()) == ["X-Trace"]
    assert session_headers_of(object()) is None


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.000_000_5, "500ns"), (0.000_812_4, "812.4µs"), (0.0015, "1.5ms"),
    (1.5, "1.5s"), (90, "1m30s"), (3600, "1h0m0s"), (3723.25, "1h2m3.25s"), (-2, "-2s")])
def test_durations_print_as_go_prints_them(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_go_values() -> None:
    assert go_time(0) == "1970-01-01T00:00:00Z"
    assert go_time(1.000_001) == "1970-01-01T00:00:01.000001Z"
    assert parse_go_time("1970-01-01T01:00:00+01:00") == 0.0
    with pytest.raises(ValueError):
        parse_go_time("1970-01-01")
    assert (go_int(1966.6), go_int(None, -1), go_int(float("nan"), -1)) == (1966, -1, -1)
    assert (go_bytes(None), go_bytes(b"\x00\xff")) == (None, "AP8=")


def test_the_request_log_line_is_llama_swaps() -> None:
    line = request_line("192.0.2.1", "POST", "/v1/chat/completions", "HTTP/1.1", 200, 1234,
                        'curl/8 "x"\n', 0.0123)
    assert line == ('Request 192.0.2.1 "POST /v1/chat/completions HTTP/1.1" 200 1234 '
                    '"curl/8 \\"x\\"\\n" 12.3ms')
    assert client_ip(None, " 198.51.100.2 ", "10.0.0.1") == "198.51.100.2"
    assert client_ip(None, None, "10.0.0.1") == "10.0.0.1"
    assert not is_logged("/wol-health") and not is_logged("/metrics")
    assert not is_logged("/api/performance") and is_logged("/api/version")


@given(st.text())
def test_the_request_line_escapes_client_text_as_go_quotes_it(text: str) -> None:
    """Whatever a client sends (path, user agent), the line stays one line with its quoted
    fields intact: control characters, quotes and backslashes escaped, the rest as sent."""
    line = request_line("127.0.0.1", "GET", "/p", "HTTP/1.1", 200, 0, text, 0.001)
    agent = line.split(" 200 0 ", 1)[1].rsplit(" ", 1)[0]
    assert "\n" not in line and "\r" not in line
    assert agent == '"' + text.encode("unicode_escape").decode("ascii").replace(
        '"', '\\"') + '"'
