"""Honest waiting through the HTTP API: heartbeats, loading state, bounded waits."""

from __future__ import annotations

import json

import pytest_twisted
import treq
from conftest import body_json, upstream_cmd, wait_for

from llamaswap.policy import ModelState

SLOW_START = f"""
routing:
  scheduler:
    heartbeat: 0.2
models:
  slow:
    cmd: {upstream_cmd("slow", "--startup-delay", "1.0")}
"""


@pytest_twisted.ensureDeferred
async def test_streaming_client_gets_heartbeats_while_the_model_loads(llamaswap) -> None:
    swapper = await llamaswap(SLOW_START)
    response = await swapper.chat("slow", stream=True)
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [b"text/event-stream"]
    text = (await treq.content(response)).decode()
    heartbeats = [line for line in text.splitlines() if line.startswith(": llamaswap:")]
    assert len(heartbeats) >= 2
    assert "waiting for model slow" in heartbeats[0] and "eta" in heartbeats[0]
    assert text.rstrip().endswith("data: [DONE]")  # the real stream followed


@pytest_twisted.ensureDeferred
async def test_non_streaming_client_waits_silently_and_gets_plain_json(llamaswap) -> None:
    swapper = await llamaswap(SLOW_START)
    response = await swapper.chat("slow")
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert (await body_json(response))["object"] == "chat.completion"


@pytest_twisted.ensureDeferred
async def test_send_loading_state_streams_reasoning_progress(llamaswap) -> None:
    swapper = await llamaswap(f"""
sendLoadingState: true
models:
  slow:
    cmd: {upstream_cmd("slow", "--startup-delay", "1.2")}
""")
    response = await swapper.chat("slow", stream=True)
    events = [json.loads(line[6:]) for line in (await treq.content(response)).decode()
              .splitlines() if line.startswith("data: {")]
    reasoning = "".join(e["choices"][0]["delta"].get("reasoning_content", "") for e in events)
    assert "llamaswap loading model: slow" in reasoning and "Done!" in reasoning
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert content  # the model's own answer follows in the same stream


@pytest_twisted.ensureDeferred
async def test_start_failure_after_heartbeats_is_an_error_event(llamaswap) -> None:
    swapper = await llamaswap(f"""
healthCheckTimeout: 15
routing:
  scheduler:
    heartbeat: 0.2
models:
  doomed:
    cmd: {upstream_cmd("doomed", "--startup-delay", "0.8", "--exit-after", "0")}
    checkEndpoint: /never
""")
    response = await swapper.chat("doomed", stream=True)
    text = (await treq.content(response)).decode()
    assert response.code == 200  # the stream had begun
    assert "event: error" in text and "model_start_failed" in text


@pytest_twisted.ensureDeferred
async def test_queue_timeout_is_503_with_retry_after(llamaswap) -> None:
    swapper = await llamaswap(f"""
routing:
  scheduler:
    use: fifo
    queueTimeout: 0.5
hooks:
  on_startup:
    preload: [busy]
models:
  busy:
    cmd: {upstream_cmd("busy")}
  other:
    cmd: {upstream_cmd("other")}
""")
    # Loaded before the first request: a cold start under load can outlast the 0.5 s limit.
    await wait_for(lambda: swapper.state("busy") is ModelState.READY, timeout=30)
    assert (await swapper.chat("busy")).code == 200
    holding = swapper.chat("busy", test_delay=2.0)
    await wait_for(lambda: swapper.service.router.in_flight("busy") == 1)
    response = await swapper.chat("other")
    assert response.code == 503
    assert int(response.headers.getRawHeaders(b"retry-after")[0]) >= 1
    assert (await body_json(response))["error"]["code"] == "queue_timeout"
    assert (await holding).code == 200
    assert swapper.state("busy") is ModelState.READY  # nothing was swapped for a lost cause
