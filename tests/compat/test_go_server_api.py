"""llama-swap's ``internal/server`` management scenarios (``apigroup_test.go``, the API parts
of ``api_test.go``, ``log_test.go`` and ``metrics_test.go``), replayed over HTTP against a
real llamaswap whose models are the test upstream.

llama-swap checks these handlers with stub routers and a metrics store it fills by hand;
here every activity row, in-flight entry and log line comes from a real request, and the
tests look at the management endpoints (``/api/*``, ``/logs``) the way a client would.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
import pytest_twisted
import treq

from llamaswap._version import __version__
from tests.compat.support import Follow, harness, open_upgrade, own_port_model, wsecho_cmd

body_json = harness.body_json
wait_for = harness.wait_for


def config(*names: str, extra: str = "") -> str:
    """Test upstreams side by side (one non-swapping group), plus top-level ``extra``."""
    lines = ["models:"]
    for name in names:
        lines += [f"  {name}:", f"    {own_port_model(name)}"]
    if len(names) > 1:
        members = ", ".join(names)
        lines += ["groups:", f"  all: {{swap: false, exclusive: false, members: [{members}]}}"]
    return extra + "\n".join(lines) + "\n"


async def rows(swapper: Any, query: str = "") -> dict[str, Any]:
    response = await swapper.get("/api/metrics/activity" + query)
    assert response.code == 200, query
    return dict(await body_json(response))


async def until(check: Any, timeout: float = 30.0) -> None:
    """Poll the coroutine function ``check`` until it answers true; fail after ``timeout``."""
    for _ in range(int(timeout / 0.1)):
        if await check():
            return
        await harness.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout}s")


async def settled(swapper: Any, count: int) -> list[dict[str, Any]]:
    """The activity rows once ``count`` of them are stored (newest first)."""
    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        nonlocal found
        found = (await rows(swapper, "?limit=999"))["data"]
        return len(found) >= count

    await until(enough)
    return found


async def follow(swapper: Any, path: str) -> Follow:
    response = await swapper.get(path, unbuffered=True)
    assert response.code == 200
    collector = Follow()
    response.deliverBody(collector)
    return collector


def inflight(events: Follow) -> list[dict[str, Any]]:
    return [data for kind, data in events.events() if kind == "inflight"]


class Held:
    """A streamed chat whose upstream goes quiet after one token: in flight until hung up."""

    def __init__(self, collector: Follow) -> None:
        self.collector = collector

    def hang_up(self) -> None:
        self.collector.stop()


async def hold(swapper: Any, model: str, path: str = "/v1/chat/completions",
               headers: dict[str, str] | None = None) -> Held:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}],
            "stream": True, "test_stall_after": 1}
    response = await swapper.post(path, body, headers={"Content-Type": "application/json",
                                                       **(headers or {})}, unbuffered=True)
    assert response.code == 200
    collector = Follow()
    response.deliverBody(collector)
    await wait_for(lambda: b"data:" in collector.data, timeout=30)
    return Held(collector)


async def log_text(swapper: Any) -> str:
    return (await treq.content(await swapper.get("/logs"))).decode()


# --- apigroup_test.go: version, hardware, performance, events ------------------------------


@pytest_twisted.ensureDeferred
async def test_version_names_the_build(llamaswap, monkeypatch: pytest.MonkeyPatch) -> None:
    """follows internal/server TestServer_APIVersion"""
    monkeypatch.setenv("LLAMASWAP_COMMIT", "deadbeef")
    monkeypatch.setenv("LLAMASWAP_BUILD_DATE", "2026-05-19")
    swapper = await llamaswap(config("m1"))
    response = await swapper.get("/api/version")
    assert response.code == 200
    assert await body_json(response) == {"version": __version__, "commit": "deadbeef",
                                         "build_date": "2026-05-19"}


@pytest_twisted.ensureDeferred
async def test_hardware_is_a_schema_one_snapshot(llamaswap) -> None:
    """follows internal/server TestServer_APIHardware"""
    swapper = await llamaswap(config("m1"))
    response = await swapper.get("/api/hardware")
    assert response.code == 200
    snapshot = await body_json(response)
    assert snapshot["schema_version"] == 1
    assert isinstance(snapshot["memory"]["capacity_bytes"], int)
    assert snapshot["memory"]["capacity_bytes"] > 0
    assert isinstance(snapshot["accelerators"], list)  # a list, empty without a GPU


@pytest_twisted.ensureDeferred
async def test_performance_sampling_off_is_503_enabled_false(llamaswap) -> None:
    """follows internal/server TestServer_APIPerformance_Unavailable"""
    swapper = await llamaswap(config("m1", extra="performance: {disabled: true}\n"))
    response = await swapper.get("/api/performance")
    assert response.code == 503
    assert await body_json(response) == {"enabled": False}


@pytest_twisted.ensureDeferred
async def test_metrics_stay_served_when_performance_sampling_is_off(llamaswap) -> None:
    """follows internal/server TestServer_HandleMetrics_Unavailable (a deliberate difference:
    llamaswap's ``/metrics`` is its own Prometheus endpoint, always on, where llama-swap's
    exists only with its performance monitor and is 503 without it)"""
    swapper = await llamaswap(config("m1", extra="performance: {disabled: true}\n"))
    assert (await swapper.chat("m1")).code == 200
    response = await swapper.get("/metrics")
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    assert "# TYPE" in await treq.text_content(response)


@pytest_twisted.ensureDeferred
async def test_event_stream_opens_with_every_kind_of_state(llamaswap) -> None:
    """follows internal/server TestServer_APIEvents_InitialPayload"""
    ui = "ui:\n  activity:\n    session_id: [X-Trace-ID]\n"
    swapper = await llamaswap(config("m1", extra=ui))
    events = await follow(swapper, "/api/events")
    wanted = {"modelStatus", "inflight", "uiConfig", "profileChanged", "logData"}
    await wait_for(lambda: wanted <= {kind for kind, _ in events.events()}, timeout=20)
    sent = [data for kind, data in events.events() if kind == "uiConfig"]
    assert sent[0] == {"activity": {"session_id": ["X-Trace-ID"]}}
    events.stop()
    await events.done


# --- apigroup_test.go: activity and stats ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_activity_starts_empty(llamaswap) -> None:
    """follows internal/server TestServer_APIMetricsActivity_Empty"""
    swapper = await llamaswap(config("m1"))
    page = await rows(swapper)
    assert page["total"] == 0 and page["data"] == []


@pytest_twisted.ensureDeferred
async def test_activity_filtered_by_model_shows_its_capture(llamaswap) -> None:
    """follows internal/server TestServer_APIMetricsActivity"""
    swapper = await llamaswap(config("m1", "m2", extra="captureBuffer: 5\n"))
    for model in ("m1", "m2"):
        assert (await swapper.chat(model)).code == 200
    await settled(swapper, 2)
    page = await rows(swapper, "?model=m1&limit=10&page=1")
    assert page["total"] == 1 and len(page["data"]) == 1
    (row,) = page["data"]
    assert row["model"] == "m1" and row["has_capture"] is True
    assert (await swapper.get(f"/api/captures/{row['id']}")).code == 200


@pytest_twisted.ensureDeferred
async def test_activity_filters_by_models_ids_and_time(llamaswap) -> None:
    """follows internal/server TestServer_APIMetricsActivityFilters"""
    swapper = await llamaswap(config("m1", "m2", "m3"))
    for model in ("m1", "m2", "m1", "m3"):
        assert (await swapper.chat(model)).code == 200
    stored = list(reversed(await settled(swapper, 4)))  # oldest first
    ids = [row["id"] for row in stored]
    assert ids == sorted(ids) and [row["model"] for row in stored] == ["m1", "m2", "m1", "m3"]

    def at(index: int) -> str:
        return quote(stored[index]["timestamp"], safe="")

    def want(*indexes: int) -> list[int]:
        return [ids[i] for i in indexes]

    cases = {
        "?model=m1&model=m3": want(3, 2, 0),
        "?model=m2": want(1),
        f"?min_id={ids[1]}&max_id={ids[2]}": want(2, 1),
        f"?min_id={ids[3]}": want(3),
        f"?max_id={ids[1]}": want(1, 0),
        f"?model=m1&min_id={ids[1]}": want(2),
        f"?start={at(2)}": want(3, 2),
        f"?end={at(1)}": want(1, 0),
        f"?start={at(1)}&end={at(2)}": want(2, 1),
        f"?start={at(0)}&end={at(3)}&model=m1": want(2, 0),
        f"?start={at(0)}&min_id={ids[2]}": want(3, 2),
        "": want(3, 2, 1, 0),
    }
    for query, expected in cases.items():
        page = await rows(swapper, query)
        assert page["total"] == len(expected), query
        assert [row["id"] for row in page["data"]] == expected, query


@pytest_twisted.ensureDeferred
async def test_bad_activity_filters_are_400(llamaswap) -> None:
    """follows internal/server TestServer_APIMetricsActivityInvalidFilters"""
    swapper = await llamaswap(config("m1"))
    for query in ("?min_id=abc", "?max_id=0", "?min_id=-1", "?min_id=9&max_id=2",
                  "?start=nonsense", "?end=2026-01-01",
                  "?start=2026-02-01T00:00:00Z&end=2026-01-01T00:00:00Z"):
        response = await swapper.get("/api/metrics/activity" + query)
        assert response.code == 400, query
        assert (await body_json(response))["error"]["message"], query


@pytest_twisted.ensureDeferred
async def test_stats_of_one_model_add_up_its_rows(llamaswap) -> None:
    """follows internal/server TestServer_APIMetricsStats"""
    swapper = await llamaswap(config("m1", "m2"))
    for model in ("m1", "m1", "m2"):
        assert (await swapper.chat(model, stream=True,
                                    stream_options={"include_usage": True})).code == 200
    stored = [row for row in await settled(swapper, 3) if row["model"] == "m1"]
    response = await swapper.get("/api/metrics/stats?model=m1")
    assert response.code == 200
    stats = await body_json(response)
    assert stats["total_requests"] == 2
    assert stats["total_input_tokens"] == sum(r["tokens"]["input_tokens"] for r in stored) > 0
    assert stats["total_output_tokens"] == sum(r["tokens"]["output_tokens"] for r in stored) > 0
    assert stats["total_cache_tokens"] == sum(max(0, r["tokens"]["cache_tokens"])
                                              for r in stored)
    assert stats["prompt_histogram"] is not None and stats["gen_histogram"] is not None


# --- apigroup_test.go: requests in flight -------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_cancel_ends_a_request_in_flight_and_404s_an_unknown_id(llamaswap) -> None:
    """follows internal/server TestServer_APICancelInflight and
    TestServer_InflightCancelByIDCancelsRequestContext"""
    swapper = await llamaswap(config("m1"))
    held = await hold(swapper, "m1")
    (entry,) = (await body_json(await swapper.get("/api/inflight")))["requests"]
    response = await swapper.post(f"/api/inflight/{entry['id']}/cancel", b"")
    assert response.code == 200
    await held.collector.done  # the client's stream ended
    await wait_for(lambda: swapper.service.router.in_flight("m1") == 0, timeout=20)
    assert (await body_json(await swapper.get("/api/inflight")))["requests"] == []
    missing = await swapper.post("/api/inflight/missing/cancel", b"")
    assert missing.code == 404
    await treq.content(missing)


@pytest_twisted.ensureDeferred
async def test_request_in_flight_is_listed_updated_and_removed(llamaswap) -> None:
    """follows internal/server
    TestServer_InflightMiddleware_AddsAndRemovesEntriesAroundRequestHandling,
    TestServer_InflightEventPayloadIncludesRequestEntries and
    TestServer_InflightMiddleware_StreamsResponseUpdates (credentials are left out of the
    headers, where llama-swap shows them as ``[REDACTED]``: a deliberate difference)"""
    swapper = await llamaswap(config("m1"))
    events = await follow(swapper, "/api/events")
    await wait_for(lambda: inflight(events), timeout=20)  # the opening snapshot
    held = await hold(swapper, "m1", headers={
        "User-Agent": "test-agent", "Authorization": "Bearer secret",
        "X-Forwarded-For": "203.0.113.9, 10.0.0.1"})
    (entry,) = (await body_json(await swapper.get("/api/inflight")))["requests"]
    assert entry["id"] and entry["model"] == "m1" and entry["method"] == "POST"
    assert entry["req_path"] == "/v1/chat/completions"
    assert entry["remote_ip"] == "203.0.113.9"
    assert entry["req_headers"]["User-Agent"] == "test-agent"
    assert "Authorization" not in entry["req_headers"]
    assert entry["elapsed_ms"] >= 0

    def upserts() -> list[dict[str, Any]]:
        return [d["request"] for d in inflight(events) if d["operation"] == "upsert"]

    await wait_for(lambda: any(u["resp_bytes"] > 0 for u in upserts()), timeout=20)
    first = upserts()[0]
    assert first["id"] == entry["id"] and first["req_path"] == "/v1/chat/completions"
    assert any(u["resp_headers"].get("Content-Type", "").startswith("text/event-stream")
               for u in upserts())
    held.hang_up()
    await wait_for(lambda: any(d["operation"] == "remove" and d["id"] == entry["id"]
                               for d in inflight(events)), timeout=20)
    assert (await body_json(await swapper.get("/api/inflight")))["requests"] == []
    events.stop()


@pytest_twisted.ensureDeferred
async def test_finished_request_leaves_flight_and_is_recorded_once(llamaswap) -> None:
    """follows internal/server TestServer_InflightMetricsRecordsCompletedOnce"""
    swapper = await llamaswap(config("m1"))
    assert (await swapper.chat("m1")).code == 200
    (row,) = await settled(swapper, 1)
    assert row["model"] == "m1"
    assert row["tokens"]["input_tokens"] > 0 and row["tokens"]["output_tokens"] > 0
    assert (await body_json(await swapper.get("/api/inflight")))["requests"] == []
    assert (await rows(swapper))["total"] == 1


@pytest_twisted.ensureDeferred
async def test_a_listener_that_stops_reading_does_not_hold_up_requests(llamaswap) -> None:
    """follows internal/server TestServer_InflightTracker_OutboxDoesNotBlockRequests"""
    swapper = await llamaswap(config("m1"))
    stalled = await follow(swapper, "/api/events")
    await wait_for(lambda: inflight(stalled), timeout=20)
    stalled.transport.pauseProducing()  # type: ignore[attr-defined]  # reads nothing more
    for _ in range(20):
        response = await swapper.chat("m1", stream=True)
        assert response.code == 200
        await treq.content(response)
    assert (await body_json(await swapper.get("/api/inflight")))["requests"] == []
    stalled.transport.resumeProducing()  # type: ignore[attr-defined]
    await wait_for(lambda: sum(d["operation"] == "remove" for d in inflight(stalled)) >= 20,
                   timeout=30)
    stalled.stop()


# --- api_test.go: /upstream requests in flight and in activity ------------------------------


async def marker(swapper: Any, model: str) -> None:
    """A tracked request after the ones under test: once its row or events are there, any
    the earlier requests made would be too (rows and events keep their order)."""
    assert (await swapper.post(f"/upstream/{model}/v1/chat/completions",
                               {"model": model, "messages": []})).code == 200


@pytest_twisted.ensureDeferred
async def test_upstream_model_endpoints_are_in_flight_and_others_not(llamaswap) -> None:
    """follows internal/server TestServer_HandleUpstream_InflightTracksSupportedPaths and
    TestServer_HandleUpstream_InflightSkipsUnsupportedPath"""
    swapper = await llamaswap(config("m1"))
    assert (await swapper.get("/upstream/m1/health")).code == 200  # loaded
    events = await follow(swapper, "/api/events")
    await wait_for(lambda: inflight(events), timeout=20)
    probe = await swapper.post("/upstream/m1/probe", {"test_echo": True})
    assert probe.code == 200
    await treq.content(probe)
    props = await swapper.get("/upstream/m1/props")
    assert props.code == 200
    await treq.content(props)
    await marker(swapper, "m1")

    def added() -> list[tuple[str, str, str]]:
        return [(d["request"]["model"], d["request"]["method"], d["request"]["req_path"])
                for d in inflight(events) if d["operation"] == "upsert"]

    await wait_for(lambda: ("m1", "POST", "/v1/chat/completions") in added(), timeout=20)
    assert sorted(set(added())) == [("m1", "GET", "/props"),
                                    ("m1", "POST", "/v1/chat/completions")]
    assert (await body_json(await swapper.get("/api/inflight")))["requests"] == []
    events.stop()


@pytest_twisted.ensureDeferred
async def test_upstream_posts_to_model_endpoints_are_recorded_and_others_not(llamaswap) -> None:
    """follows internal/server TestServer_HandleUpstream_MetricsRecordsSupportedPath,
    TestServer_HandleUpstream_MetricsSkipsGET and
    TestServer_HandleUpstream_MetricsSkipsUnsupportedPath"""
    swapper = await llamaswap(config("m1"))
    response = await swapper.post("/upstream/m1/v1/chat/completions",
                                  {"model": "m1", "messages": [{"role": "user", "content": "hi"}]})
    assert response.code == 200
    await treq.content(response)
    (row,) = await settled(swapper, 1)
    assert row["model"] == "m1" and row["req_path"] == "/v1/chat/completions"
    assert row["tokens"]["input_tokens"] > 0 and row["tokens"]["output_tokens"] > 0
    for sent in (swapper.get("/upstream/m1/v1/chat/completions"),
                 swapper.post("/upstream/m1/probe", {"test_echo": True})):
        answer = await sent
        assert answer.code in (200, 404, 405)
        await treq.content(answer)
    await marker(swapper, "m1")
    stored = await settled(swapper, 2)
    assert [r["req_path"] for r in stored] == ["/v1/chat/completions"] * 2


@pytest_twisted.ensureDeferred
async def test_speech_through_upstream_captures_no_response_body(llamaswap) -> None:
    """follows internal/server TestServer_MetricsMiddleware_UpstreamAudioCaptureSkipsRespBody"""
    swapper = await llamaswap(config("m1", extra="captureBuffer: 5\n"))
    response = await swapper.post("/upstream/m1/v1/audio/speech",
                                  {"model": "m1", "input": "hello"})
    assert response.code == 200
    assert (await treq.content(response)).startswith(b"ID3")
    (row,) = await settled(swapper, 1)
    assert row["has_capture"] is True
    capture = await body_json(await swapper.get(f"/api/captures/{row['id']}"))
    assert not capture["resp_body"]
    assert capture["resp_headers"]["Content-Type"].startswith("audio/")


# --- log_test.go and api_test.go: the request log, client address, redirects --------------


@pytest_twisted.ensureDeferred
async def test_each_request_logs_one_line_but_the_quiet_paths(llamaswap) -> None:
    """follows internal/server TestServer_RequestLogMiddleware"""
    swapper = await llamaswap(config("m1"))
    assert (await swapper.chat("m1")).code == 200
    for path in ("/wol-health", "/api/performance", "/metrics"):
        await treq.content(await swapper.get(path))
    text = await log_text(swapper)
    line = re.compile(r'Request 127\.0\.0\.1 "POST /v1/chat/completions HTTP/1\.1" 200 \d+ ')
    assert line.search(text), text
    for path in ("/wol-health", "/api/performance", "/metrics"):
        assert f'"GET {path} ' not in text, path


@pytest_twisted.ensureDeferred
async def test_request_log_names_the_forwarded_client(llamaswap) -> None:
    """follows internal/server TestServer_ClientIP"""
    swapper = await llamaswap(config("m1"))
    for headers in ({"X-Forwarded-For": "1.2.3.4, 5.6.7.8"}, {"X-Real-IP": "9.9.9.9"}, {}):
        await treq.content(await swapper.get("/v1/models", headers=headers))
    text = await log_text(swapper)
    for client in ("1.2.3.4", "9.9.9.9", "127.0.0.1"):
        assert f'Request {client} "GET /v1/models HTTP/1.1" 200' in text, client
    assert "5.6.7.8" not in text


@pytest_twisted.ensureDeferred
async def test_a_logged_websocket_upgrade_still_relays(llamaswap) -> None:
    """follows internal/server TestServer_RequestLogMiddleware_WebSocketUpgrade"""
    swapper = await llamaswap(f"models:\n  ws:\n    cmd: {wsecho_cmd()}\n")
    client = await open_upgrade(swapper.port, "/upstream/ws/socket")
    assert client.status == 101
    client.received = b""
    client.transport.write(b"ping")
    await wait_for(lambda: client.received == b"ping", timeout=20)
    client.transport.loseConnection()
    await client.closed

    async def logged() -> bool:
        return '"GET /upstream/ws/socket HTTP/1.1" 101' in await log_text(swapper)

    await until(logged)


@pytest_twisted.ensureDeferred
async def test_root_and_bare_upstream_redirect_to_the_ui(llamaswap) -> None:
    """follows internal/server TestServer_Redirects"""
    swapper = await llamaswap(config("m1"))
    for path, location in (("/", "/ui"), ("/upstream", "/ui/models")):
        response = await swapper.get(path, allow_redirects=False)
        assert response.code == 302, path
        assert response.headers.getRawHeaders("location") == [location], path
