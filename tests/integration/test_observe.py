"""Logs, live events, metrics and activity against a real llamaswap and real upstreams."""

from __future__ import annotations

import base64
import gc
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol

from tests.integration.conftest import UPSTREAM, body_json, free_port, upstream_cmd, wait_for

# A talkative upstream (no --quiet): it prints one line per request.
TALKATIVE = f"{sys.executable} {UPSTREAM} --port ${{PORT}} --model org/chat --token-delay 0.01"
CONFIG = f"""
models:
  org/chat:
    cmd: {TALKATIVE}
  other:
    cmd: {upstream_cmd("other")}
"""


class Follow(Protocol):
    """Collects a streamed response body as it arrives."""

    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any) -> None:
        if not self.done.called:
            self.done.callback(None)

    def events(self) -> list[tuple[str, Any]]:
        out = []
        for frame in self.data.decode().split("\n\n"):
            for line in frame.split("\n"):
                if line.startswith("data:"):
                    envelope = json.loads(line[5:])
                    out.append((envelope["type"], json.loads(envelope["data"])))
        return out


async def follow(swapper: Any, path: str) -> tuple[Any, Follow]:
    response = await swapper.get(path, unbuffered=True)
    collector = Follow()
    response.deliverBody(collector)
    return response, collector


def stop(collector: Follow) -> None:
    collector.transport.stopProducing()  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_a_streamed_chat_shows_up_in_metrics_activity_and_captures(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    response = await swapper.chat("org/chat", stream=True,
                                  stream_options={"include_usage": True})
    body = await treq.content(response)
    assert body.endswith(b"data: [DONE]\n\n")
    await wait_for(lambda: swapper.service.observability.in_flight == {})

    metrics = (await treq.content(await swapper.get("/metrics"))).decode()
    assert 'llamaswap_model_state{model="org/chat",state="ready"} 1.0' in metrics
    assert 'llamaswap_time_to_first_byte_seconds_count{model="org/chat"} 1.0' in metrics
    assert 'llamaswap_queue_wait_seconds_count{model="org/chat"} 1.0' in metrics
    assert 'llamaswap_model_load_seconds_count{model="org/chat"} 1.0' in metrics
    assert ('llamaswap_requests_total{endpoint="/v1/chat/completions",model="org/chat",'
            'status="200"} 1.0') in metrics

    await wait_for(lambda: 1 in swapper.service.observability.captures)
    page = await body_json(await swapper.get("/api/metrics/activity?model=org/chat"))
    (row,) = page["data"]
    events = [json.loads(line[6:]) for line in body.decode().split("\n\n")
              if line.startswith("data: {")]
    usage = next(e["usage"] for e in events if e.get("usage"))
    timings = next(e["timings"] for e in events if e.get("timings"))
    tokens = row["tokens"]
    assert tokens["input_tokens"] == timings["prompt_n"]
    assert tokens["output_tokens"] == usage["completion_tokens"] == timings["predicted_n"]
    assert tokens["tokens_per_second"] == timings["predicted_per_second"]
    assert row["resp_status_code"] == 200 and row["req_path"] == "/v1/chat/completions"
    assert row["resp_content_type"].startswith("text/event-stream")
    assert row["ttfb_ms"] is not None and row["ttfb_ms"] <= row["duration_ms"]
    assert row["has_capture"] is True and row["remote_ip"] == "127.0.0.1"
    output_tokens = float(tokens["output_tokens"])
    assert f'llamaswap_completion_tokens_total{{model="org/chat"}} {output_tokens}' in metrics

    capture = await body_json(await swapper.get(f"/api/captures/{row['id']}"))
    assert json.loads(base64.b64decode(capture["req_body"]))["model"] == "org/chat"
    assert base64.b64decode(capture["resp_body"]) == body
    assert capture["resp_headers"]["Content-Type"].startswith("text/event-stream")

    stats = await body_json(await swapper.get("/api/metrics/stats"))
    assert stats["models"]["org/chat"]["total_output_tokens"] == tokens["output_tokens"]
    assert stats["total_output_tokens"] == tokens["output_tokens"]
    assert stats["gen_histogram"]["bins"] == [1]

    missing = await swapper.get("/api/captures/9999")
    assert missing.code == 404
    assert (await body_json(missing))["error"]["code"] == "not_found"


@pytest_twisted.ensureDeferred
async def test_requests_that_never_reach_a_model_are_recorded_too(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    stored: list[Any] = []
    unsubscribe = swapper.service.observability.bus.subscribe(stored.append)
    response = await swapper.chat("no-such-model")
    assert response.code == 404
    await wait_for(lambda: stored)  # the "activity" event follows the insert
    unsubscribe()
    page = await body_json(await swapper.get("/api/metrics/activity"))
    assert [(r["model"], r["resp_status_code"], r["error_msg"]) for r in page["data"]] == [
        ("no-such-model", 404, "404 Not Found")]
    assert page["data"][0]["resp_content_type"] == "application/json"
    assert page["data"][0]["ttfb_ms"] is None


@pytest_twisted.ensureDeferred
async def test_finished_requests_are_freed_at_once_not_by_the_cyclic_collector(
        llamaswap) -> None:
    """A request left in a reference cycle waits for a full collection, which then walks
    every such request (tens of ms at 200 streams): relayed ones and refused ones alike
    must be freed by reference counting as soon as they end."""
    from llamaswap.service import AccessLoggedRequest

    swapper = await llamaswap(CONFIG)
    assert (await swapper.chat("other")).code == 200  # started, and the pool is warm
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            relayed = await swapper.chat("other")
            await relayed.content()
            refused = await swapper.chat("no-such-model")
            await refused.content()
            assert (relayed.code, refused.code) == (200, 404)
        left = [o for o in gc.get_objects() if isinstance(o, AccessLoggedRequest)]
    finally:
        gc.enable()
    assert left == []


@pytest_twisted.ensureDeferred
async def test_bad_activity_queries_get_openai_style_400s(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    for query in ("limit=0", "limit=1000", "page=x", "sort=evil;drop", "order=up",
                  "start=yesterday", "min_id=0"):
        response = await swapper.get(f"/api/metrics/activity?{query}")
        assert response.code == 400, query
        error = (await body_json(response))["error"]
        assert error["code"] == "invalid_query" and error["message"]


@pytest_twisted.ensureDeferred
async def test_model_log_stream_history_then_live_lines(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    assert (await swapper.chat("org/chat")).code == 200
    await wait_for(lambda: "POST /v1/chat/completions" in
                   swapper.service.processes["org/chat"].output.text())

    response, history = await follow(swapper, "/logs/stream/org/chat")
    assert response.headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    _, fresh = await follow(swapper, "/logs/stream/org%2Fchat?no-history")
    await wait_for(lambda: b"POST /v1/chat/completions" in history.data)
    assert fresh.data == b""
    before = history.data.count(b"POST /v1/chat/completions")

    assert (await swapper.chat("org/chat")).code == 200
    await wait_for(lambda: history.data.count(b"POST /v1/chat/completions") == before + 1)
    await wait_for(lambda: b"POST /v1/chat/completions" in fresh.data)
    assert fresh.data.count(b"\n") == 1
    stop(history)
    stop(fresh)

    combined = (await treq.content(await swapper.get("/logs"))).decode()
    assert "[INFO] " in combined and "[org/chat] demo:" in combined
    html = await swapper.get("/logs", headers={"Accept": "text/html"}, allow_redirects=False)
    assert html.code == 302 and html.headers.getRawHeaders("location") == ["/ui/"]
    unknown = await swapper.get("/logs/stream/nope")
    assert unknown.code == 400
    assert (await body_json(unknown))["error"]["message"] == (
        "invalid logger. Use 'proxy', 'upstream' or a model's ID")


@pytest_twisted.ensureDeferred
async def test_events_start_with_a_snapshot_then_follow_the_swap(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    response, events = await follow(swapper, "/api/events")
    assert response.headers.getRawHeaders("content-type") == ["text/event-stream"]
    await wait_for(lambda: len(events.events()) >= 7)
    kinds = [kind for kind, _ in events.events()[:7]]
    assert kinds == ["logData", "logData", "modelStatus", "uiConfig", "profileChanged",
                     "inflight", "queue"]  # llama-swap's order, then llamaswap's own
    first = events.events()
    assert first[0][1]["source"] == "proxy" and first[1][1]["source"] == "upstream"
    assert {m["id"]: m["state"] for m in first[2][1]} == {"org/chat": "stopped",
                                                          "other": "stopped"}
    assert first[3][1] == {"activity": {"session_id": ["X-Session-ID",
                                                       "X-Litellm-Session-Id"]}}
    assert first[4][1] == {"active": None}
    assert first[5][1] == {"operation": "snapshot", "requests": []}

    assert (await swapper.chat("other", stream=True)).code == 200
    await wait_for(lambda: any(k == "activity" for k, _ in events.events()))
    seen = events.events()[7:]
    states = [next(m["state"] for m in data if m["id"] == "other")
              for kind, data in seen if kind == "modelStatus"]
    assert states[:2] == ["starting", "ready"]
    operations = [data["operation"] for kind, data in seen if kind == "inflight"]
    assert operations[0] == "upsert" and operations[-1] == "remove"
    upsert = next(data["request"] for kind, data in seen if kind == "inflight")
    assert upsert["model"] == "other" and upsert["req_path"] == "/v1/chat/completions"
    assert any(kind == "logData" and data["source"] == "proxy" for kind, data in seen)
    stop(events)
    await wait_for(lambda: swapper.service.observability.bus.subscribers == 0)


@pytest_twisted.ensureDeferred
async def test_streams_end_when_llamaswap_stops(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    _, events = await follow(swapper, "/api/events")
    _, logs = await follow(swapper, "/logs/stream")
    await wait_for(lambda: events.data)
    await swapper.service.stopService()
    await events.done
    await logs.done
    assert swapper.service.observability.open_streams == set()


@pytest_twisted.ensureDeferred
async def test_ui_and_observability_endpoints_respect_api_keys(llamaswap) -> None:
    swapper = await llamaswap(CONFIG + "apiKeys: [sesame]\n")
    for path in ("/metrics", "/logs", "/api/events", "/api/metrics/activity"):
        response = await swapper.get(path)
        assert response.code == 401, path
        await treq.content(response)
    # The UI's static files hold no data: they load without a key, then ask for one.
    page = await swapper.get("/ui/")
    assert page.code == 200
    assert b'<script type="module" src="js/main.js">' in await treq.content(page)
    metrics = await swapper.get("/metrics", headers={"Authorization": "Bearer sesame"})
    assert metrics.code == 200
    assert b"llamaswap_model_state" in await treq.content(metrics)


@pytest_twisted.ensureDeferred
async def test_captures_stay_within_their_budget_and_never_disturb_the_body(llamaswap) -> None:
    swapper = await llamaswap(CONFIG + "captureBuffer: 0.001\n")  # 1048 bytes
    stored: list[Any] = []
    unsubscribe = swapper.service.observability.bus.subscribe(
        lambda m: stored.append(m) if m["type"] == "activity" else None)
    small = await swapper.post("/v1/chat/completions", {"model": "other", "test_echo": True})
    echoed = await body_json(small)
    big_text = "x" * 5000
    big = await swapper.post("/v1/chat/completions",
                             {"model": "other", "test_echo": True, "pad": big_text})
    assert json.loads((await body_json(big))["body"])["pad"] == big_text  # forwarded intact
    await wait_for(lambda: len(stored) == 2)
    unsubscribe()
    page = await body_json(await swapper.get("/api/metrics/activity"))
    captured = {r["id"]: r["has_capture"] for r in page["data"]}
    assert captured == {1: True, 2: False}
    capture = await body_json(await swapper.get("/api/captures/1"))
    assert json.loads(base64.b64decode(capture["req_body"])) == {"model": "other",
                                                                 "test_echo": True}
    assert json.loads(base64.b64decode(capture["resp_body"])) == echoed


def test_twistd_writes_json_lines_with_structured_fields(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    config = tmp_path / "config.yaml"
    config.write_text(f"startPort: {free_port()}\nmodels:\n  m:\n    cmd: {upstream_cmd('m')}\n")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "--logger=llamaswap.logs.json_lines_observer", "llamaswap", "-c",
         str(config), "-l", f"tcp:{port}:interface=127.0.0.1"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health?probe", timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    records = [json.loads(line) for line in out.decode().splitlines()]
    access = [r for r in records if r["namespace"] == "llamaswap.access"]
    assert access, out.decode()
    assert access[-1]["path"] == "/health?probe" and access[-1]["status"] == 200
    assert isinstance(access[-1]["request_id"], int) and access[-1]["level"] == "info"
    assert access[-1]["message"].startswith('Request 127.0.0.1 "GET /health?probe HTTP/1.1" 200')
