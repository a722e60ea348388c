"""What observability does per request stays what it was while it does less of it: captures
read back exactly, ``inflight`` payloads built only for listeners, cached metric children,
cached INSERT statements, the token meter's cheaper scans."""

from __future__ import annotations

import base64
import io
import itertools
import json
from typing import Any

from fakes import make_config, model
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.components import Componentized
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from llamaswap.activity import COLUMNS, ActivityStore, Query
from llamaswap.context import context_of
from llamaswap.events import Envelope
from llamaswap.exchange import Exchange
from llamaswap.observability import Observability
from llamaswap.tokens import _KEYS, JSON_TAIL_BYTES, TokenMeter, _mentions_figures


class StubRouter:
    def on_stop(self, listener: Any) -> None:
        pass

    def on_swap(self, listener: Any) -> None:
        pass

    def circuit_open(self, model: str) -> bool:
        return False

    def in_flight(self, model: str) -> int:
        return 0

    def queued(self) -> int:
        return 0


class SyncStore:
    """Rows numbered as they come, at once (the real store's thread is not under test)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> Deferred[int]:
        self.rows.append(row)
        return succeed(len(self.rows))


class FakeRequest(Componentized):
    """What observability reads of a twisted.web Request that is relayed to a model
    (``Componentized`` as twisted.web's: it carries llamaswap's ``RequestContext``)."""

    def __init__(self, body: bytes | None, headers: dict[bytes, list[bytes]]) -> None:
        super().__init__()
        self.path = b"/v1/chat/completions"
        self.method = b"POST"
        context_of(self).model = "m"
        self.content = io.BytesIO(body) if body is not None else None
        self.requestHeaders = Headers(headers)
        self.responseHeaders = Headers()
        self.code = 200
        self.code_message = b"OK"
        self.finished: Deferred[None] = Deferred()

    def getClientAddress(self) -> IPv4Address:
        return IPv4Address("TCP", "10.0.0.7", 5000)

    def notifyFinish(self) -> Deferred[None]:
        return self.finished


def make(budget: int = 1024 * 1024) -> tuple[Observability, SyncStore, Clock]:
    clock = Clock()
    obs = Observability(make_config(model("m"), capture_buffer_bytes=budget), {}, StubRouter(),
                        clock)
    store = SyncStore()
    obs.store = store  # type: ignore[assignment]
    return obs, store, clock


REQUEST_HEADERS = {b"authorization": [b"Bearer sk-secret"], b"x-dup": [b"one", b"two"],
                   b"content-type": [b"application/json"]}
BODY = b'{"model": "m", "prompt": "caf\xc3\xa9 \xff"}'


def relay(obs: Observability, request: FakeRequest, clock: Clock, code: int,
          headers: Headers, chunks: list[bytes]) -> Exchange:
    exchange = obs.watch(request, "http://127.0.0.1:9/v1/chat/completions")  # type: ignore[arg-type]
    clock.advance(0.01)
    request.code = code
    exchange.response(code, headers)
    for chunk in chunks:
        clock.advance(0.1)
        exchange.chunk(chunk)
    request.finished.callback(None)
    obs.request_finished(request, code, 0.5)  # type: ignore[arg-type]
    return exchange


def test_a_capture_reads_back_decoded_and_redacted_as_it_passed_by() -> None:
    obs, store, clock = make()
    request = FakeRequest(BODY, REQUEST_HEADERS)
    assert request.content is not None
    request.content.seek(7)  # where the forwarder left it: observing must not move it
    exchange = obs.watch(request, "http://127.0.0.1:9/v1/chat/completions")  # type: ignore[arg-type]
    assert request.content.tell() == 7
    request.content.close()  # twisted.web closes the body when the request ends
    exchange.response(200, Headers({b"content-type": [b"application/json"],
                                    b"content-encoding": [b"identity"],
                                    b"set-cookie": [b"a=1", b"b=2"]}))
    exchange.chunk(b'{"usage": {"prompt_tokens": 3}, "x": "\xe2\x82')
    exchange.chunk(b'\xac"}')
    request.finished.callback(None)
    assert store.rows[0]["has_capture"] is True
    capture = obs.captures.get(1)
    assert capture is not None
    # llama-swap's ReqRespCapture: bodies base64 as sent, one value per header (the
    # first), credentials and Content-Encoding left out; llamaswap's req_method beside.
    assert list(capture.items()) == [
        ("id", 1), ("req_path", "/v1/chat/completions"),
        ("req_headers", {"X-Dup": "one", "Content-Type": "application/json"}),
        ("req_body", base64.b64encode(BODY).decode()),
        ("resp_headers", {"Content-Type": "application/json"}),
        ("resp_body", base64.b64encode('{"usage": {"prompt_tokens": 3}, "x": "€"}'.encode())
         .decode()),
        ("req_method", "POST")]
    assert obs.captures.get(1) is capture  # built once, on the first read
    assert json.loads(base64.b64decode(capture["resp_body"]))["x"] == "€"


def test_a_capture_without_a_response_or_a_body_is_still_whole() -> None:
    obs, store, _ = make()
    request = FakeRequest(None, {b"accept": [b"*/*"]})
    obs.watch(request, "http://127.0.0.1:9/v1/models")  # type: ignore[arg-type]
    request.finished.errback(Failure(ConnectionError("client left")))
    assert store.rows[0]["status"] == 499 and store.rows[0]["has_capture"] is True
    capture = obs.captures.get(1)
    assert capture is not None
    assert (capture["req_headers"], capture["req_body"], capture["resp_headers"],
            capture["resp_body"]) == ({"Accept": "*/*"}, "", None, None)


def test_bodies_over_the_budget_are_not_captured_and_the_body_is_left_in_place() -> None:
    obs, store, clock = make(budget=100)
    big_request = FakeRequest(b"x" * 101, {})
    assert big_request.content is not None
    big_request.content.seek(3)
    relay(obs, big_request, clock, 200, Headers({b"content-type": [b"text/plain"]}), [b"ok"])
    assert big_request.content.tell() == 3
    relay(obs, FakeRequest(b"y" * 50, {}), clock, 200,
          Headers({b"content-type": [b"text/plain"]}), [b"z" * 30, b"z" * 30])
    assert [row["has_capture"] for row in store.rows] == [False, False]
    assert obs.captures.get(1) is None and obs.captures.get(2) is None


def test_no_capture_at_all_when_captures_are_off() -> None:
    obs, store, clock = make(budget=0)
    relay(obs, FakeRequest(BODY, REQUEST_HEADERS), clock, 200,
          Headers({b"content-type": [b"application/json"]}), [b"{}"])
    assert store.rows[0]["has_capture"] is False and obs.captures.get(1) is None


def test_inflight_payloads_are_not_built_when_nobody_listens(monkeypatch: Any) -> None:
    obs, store, clock = make()

    def entry(self: Exchange) -> dict[str, Any]:
        raise AssertionError("built an inflight payload for nobody")

    monkeypatch.setattr(Exchange, "entry", entry)
    relay(obs, FakeRequest(BODY, {}), clock, 200,
          Headers({b"content-type": [b"application/json"]}), [b"{"] * 5 + [b"}"])
    assert store.rows[0]["status"] == 200 and obs.in_flight == {}


def test_listeners_see_every_inflight_change_as_before() -> None:
    obs, _, clock = make()
    seen: list[Envelope] = []
    obs.bus.subscribe(seen.append)
    exchange = relay(obs, FakeRequest(BODY, {}), clock, 200,
                     Headers({b"content-type": [b"text/event-stream"]}), [b"data: 1\n\n"] * 4)
    events = [(e["type"], json.loads(e["data"])) for e in seen]
    assert [kind for kind, _ in events] == ["inflight"] * 4 + ["activity"]
    upserts = [(d["operation"], d["request"]["status"], d["request"]["resp_bytes"])
               for _, d in events[:3]]
    # start, headers, then the bytes so far once INFLIGHT_UPDATE_INTERVAL (0.25 s) is up
    # (chunks at 0.11 s and 0.21 s: sent at 0.25 s; the next is cancelled by the end)
    assert upserts == [("upsert", None, 0), ("upsert", 200, 0), ("upsert", 200, 18)]
    assert events[0][1]["request"]["remote_ip"] == "10.0.0.7"
    assert events[3][1] == {"operation": "remove", "id": str(exchange.id)}
    assert events[4][1] == {"id": 1}


def samples(obs: Observability) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(obs.metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_request_metrics_count_per_series_and_create_none_unused() -> None:
    obs, _, clock = make(budget=0)
    metrics = obs.metrics
    metrics.request_finished("/v1/chat/completions", "m", 200, 0.2)
    metrics.request_finished("/v1/chat/completions", "m", 200, 0.3)
    metrics.request_finished("/v1/chat/completions", "m", 404, 0.01)
    metrics.exchange_finished("m", wait=0.001, ttfb=None, input_tokens=5, output_tokens=None,
                              cached_tokens=None, prompt_per_second=None,
                              tokens_per_second=None)
    metrics.exchange_finished("m", wait=0.002, ttfb=None, input_tokens=7, output_tokens=None,
                              cached_tokens=None, prompt_per_second=None,
                              tokens_per_second=None)
    # the series ``labels()`` makes is the one the cache feeds (the status as text)
    metrics.requests.labels("/v1/chat/completions", "m", "200").inc()
    got = samples(obs)
    labels = (("endpoint", "/v1/chat/completions"), ("model", "m"))
    assert got[("llamaswap_requests_total", (*labels, ("status", "200")))] == 3.0
    assert got[("llamaswap_requests_total", (*labels, ("status", "404")))] == 1.0
    assert got[("llamaswap_request_duration_seconds_count", labels)] == 3.0
    assert got[("llamaswap_request_duration_seconds_sum", labels)] == 0.51
    assert got[("llamaswap_prompt_tokens_total", (("model", "m"),))] == 12.0
    assert got[("llamaswap_queue_wait_seconds_count", (("model", "m"),))] == 2.0
    names = {name for name, _ in got}
    assert not names & {"llamaswap_completion_tokens_total", "llamaswap_cached_prompt_tokens_total",
                        "llamaswap_time_to_first_byte_seconds_count"}


def test_a_request_that_never_reached_its_model_is_recorded_with_its_own_path() -> None:
    obs, store, _ = make(budget=0)
    request = FakeRequest(b"", {})
    request.path = b"/v1/completions"
    request.code, request.code_message = 429, b"Too Many Requests"
    obs.request_finished(request, 429, 0.002)  # type: ignore[arg-type]
    assert store.rows[0]["endpoint"] == "/v1/completions"
    assert store.rows[0]["error"] == "429 Too Many Requests"
    assert store.rows[0]["client"] == "10.0.0.7"
    assert samples(obs)[("llamaswap_requests_total", (
        ("endpoint", "/v1/completions"), ("model", "m"), ("status", "429")))] == 1.0


def test_names_nobody_configured_share_one_metrics_series() -> None:
    """A client sending random model names must not grow /metrics without bound; the
    activity history (bounded by its row cap) keeps the name it asked for."""
    obs, store, _ = make(budget=0)
    for name in ("nope-1", "nope-2", "m"):
        request = FakeRequest(b"", {})
        context_of(request).model = name
        request.code, request.code_message = 404, b"Not Found"
        obs.request_finished(request, 404, 0.001)  # type: ignore[arg-type]
    got = samples(obs)
    by_model = {dict(labels)["model"]: value for (name, labels), value in got.items()
                if name == "llamaswap_requests_total"}
    assert by_model == {"": 2.0, "m": 1.0}
    assert [row["model"] for row in store.rows] == ["nope-1", "nope-2", "m"]
    obs.reconfigure(make_config(model("m"), model("nope-1")))  # a reload adds the name
    request = FakeRequest(b"", {})
    context_of(request).model = "nope-1"
    obs.request_finished(request, 200, 0.001)  # type: ignore[arg-type]
    assert ("llamaswap_requests_total", (("endpoint", "/v1/chat/completions"),
            ("model", "nope-1"), ("status", "200"))) in samples(obs)


def test_rows_of_any_shape_land_in_their_columns() -> None:
    store = ActivityStore(Clock(), None, 100)
    store._open()
    try:
        full: dict[str, Any] = {c: None for c in COLUMNS if c != "id"}
        full.update(ts=1.0, model="a", endpoint="/e", method="POST", status=200,
                    duration_ms=2.0, output_tokens=9, has_capture=True)
        short = {"ts": 2.0, "model": "b", "endpoint": "/e", "method": "GET", "status": 404,
                 "duration_ms": 1.0, "error": "404 Not Found"}
        reordered = {"status": 500, "model": "c", "duration_ms": 3.0, "ts": 3.0,
                     "method": "PUT", "endpoint": "/r", "id": 999, "unknown": "ignored"}
        assert store._insert([full, short, full, reordered, short]) == [1, 2, 3, 4, 5]
        rows = store._select(Query(sort="id", descending=False))["data"]
        assert [(r["id"], r["model"], r["status"], r["method"]) for r in rows] == [
            (1, "a", 200, "POST"), (2, "b", 404, "GET"), (3, "a", 200, "POST"),
            (4, "c", 500, "PUT"), (5, "b", 404, "GET")]
        assert rows[0]["output_tokens"] == 9 and rows[0]["has_capture"] is True
        assert rows[1]["error"] == "404 Not Found" and rows[1]["has_capture"] is False
        assert rows[3]["endpoint"] == "/r" and rows[3]["error"] is None
    finally:
        store._close()


@given(st.lists(st.sampled_from([b'"usage"', b'"timings"', b'"metrics"', b'"usage', b"usage\"",
                                 b'"', b"x", b"\n", b'"timing"', b'"metric"s']), max_size=12))
def test_the_figures_scan_finds_exactly_the_keys(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert bool(_mentions_figures(data)) == any(k in data for k in _KEYS)


@given(st.lists(st.integers(min_value=1, max_value=3 * JSON_TAIL_BYTES), min_size=1,
                max_size=6))
def test_the_json_tail_is_the_last_bytes_whatever_the_chunk_sizes(sizes: list[int]) -> None:
    counter = itertools.count()
    body = b"".join(bytes([48 + next(counter) % 10]) * size for size in sizes)
    meter = TokenMeter("application/json")
    at = 0
    for size in sizes:
        meter.feed(body[at:at + size])
        at += size
        assert meter._buffer == body[:at][-JSON_TAIL_BYTES:]


def test_watch_numbers_exchanges_by_request_id_or_its_own_count() -> None:
    obs, _, clock = make(budget=0)
    request = FakeRequest(b"", {})
    context_of(request).request_id = 41
    assert obs.watch(request, "u").id == 41  # type: ignore[arg-type]
    assert obs.watch(FakeRequest(b"", {}), "u").id == 1  # type: ignore[arg-type]


def test_kept_captures_are_invisible_to_the_cyclic_collector() -> None:
    """Thousands of captures are kept (5 MiB by default): as objects they made every full
    collection slow; frozen, the collector stops tracking them."""
    import gc

    obs, _, clock = make()
    for _ in range(50):
        relay(obs, FakeRequest(BODY, REQUEST_HEADERS), clock, 200,
              Headers({b"content-type": [b"application/json"], b"x-dup": [b"a", b"b"]}),
              [b"{}"])
    gc.collect()
    gc.collect()  # a tuple is untracked once what it holds is: one level per collection
    kept = list(obs.captures._items.values())
    assert len(kept) == 50
    assert not any(gc.is_tracked(item) for item in kept)
    assert obs.captures.get(1) is not None  # and each still reads back as before


def test_captures_of_empty_exchanges_are_bounded_in_number() -> None:
    from llamaswap.activity import CAPTURE_OVERHEAD

    obs, _, clock = make(budget=20 * CAPTURE_OVERHEAD)
    for _ in range(200):
        relay(obs, FakeRequest(None, {}), clock, 204, Headers({}), [])
    assert 0 < len(obs.captures._items) <= 20


def test_rows_the_store_drops_are_counted_and_not_logged_each() -> None:
    from twisted.internet.defer import fail

    from llamaswap.activity import StoreBusy

    obs, _, _ = make(budget=0)
    obs.store.add = lambda row: fail(StoreBusy())  # type: ignore[method-assign]
    logged: list[dict[str, Any]] = []
    from llamaswap.logs import llamaswap_events
    llamaswap_events.addObserver(logged.append)
    try:
        for _ in range(3):
            obs.record({"model": "m", "method": "POST", "endpoint": "/v1/chat/completions"}, None)
    finally:
        llamaswap_events.removeObserver(logged.append)
    assert samples(obs)[("llamaswap_activity_dropped_total", ())] == 3.0
    assert not [e for e in logged if "activity store" in e.get("log_format", "")]
