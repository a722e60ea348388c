"""llama-swap's management API over HTTP against a real llamaswap and real upstreams: every
endpoint llama-swap's UI and API clients use answers in llama-swap's types (field names and
JSON types), cancelling a request in flight ends it for both sides, and the redirects, health
paths and request log lines are llama-swap's."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest_twisted
import treq

from tests.compat import llama_swap_types as T
from tests.integration.conftest import body_json, sleep, upstream_cmd, wait_for
from tests.integration.test_observe import Follow, stop

CONFIG = f"""
apiKeys: [sesame]
models:
  m:
    cmd: {upstream_cmd("m")}
    aliases: [mm]
"""
KEY = {"Authorization": "Bearer sesame"}
CHAT = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}],
        "stream_options": {"include_usage": True}}


async def get_json(swapper: Any, path: str, status: int = 200) -> Any:
    response = await swapper.get(path, headers=KEY)
    assert response.code == status, path
    return await body_json(response)


@pytest_twisted.ensureDeferred
async def test_every_management_endpoint_answers_in_llama_swaps_types(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    response = await swapper.post("/v1/chat/completions", CHAT, headers={
        **KEY, "Content-Type": "application/json", "User-Agent": "contract-test/1",
        "Cookie": "session=1", "X-Session-ID": "s-1"})
    body = await treq.content(response)
    await wait_for(lambda: 1 in swapper.service.observability.captures)

    page = await get_json(swapper, "/api/metrics/activity")
    T.assert_decodes(page, T.ACTIVITY_PAGE)
    (row,) = page["data"]
    assert (row["model"], row["req_path"], row["resp_status_code"]) == (
        "m", "/v1/chat/completions", 200)
    assert row["tokens"]["output_tokens"] > 0 and row["has_capture"] is True
    T.assert_decodes(await get_json(swapper, "/api/metrics/activity?model=m&sort=gen_speed"
                                             "&order=asc&limit=5&start=2000-01-01T00:00:00Z"),
                     T.ACTIVITY_PAGE)
    empty = await get_json(swapper, "/api/metrics/activity?model=none")
    assert (empty["data"], empty["total"], empty["total_pages"]) == ([], 0, 0)

    stats = await get_json(swapper, "/api/metrics/stats?model=m")
    T.assert_decodes(stats, T.ACTIVITY_STATS)
    assert stats["total_requests"] == 1 and stats["gen_histogram"]["bins"] == [1]

    capture = await get_json(swapper, f"/api/captures/{row['id']}")
    T.assert_decodes(capture, T.REQ_RESP_CAPTURE)
    assert base64.b64decode(capture["resp_body"]) == body
    assert json.loads(base64.b64decode(capture["req_body"]))["model"] == "m"
    shown = {name.lower() for name in capture["req_headers"]}
    assert "user-agent" in shown and not shown & {"authorization", "cookie"}
    bad = await swapper.get("/api/captures/abc", headers=KEY)
    assert bad.code == 400
    assert (await body_json(bad))["error"]["message"] == "invalid capture ID"
    assert (await get_json(swapper, "/api/captures/999", 404))["error"]["message"] == (
        "capture not found")

    T.assert_decodes(await get_json(swapper, "/api/version"), T.VERSION_INFO)
    T.assert_decodes(await get_json(swapper, "/api/hardware"), T.HARDWARE_SNAPSHOT)
    performance = await get_json(swapper, "/api/performance")
    T.assert_decodes(performance, T.PERFORMANCE)
    assert performance["enabled"] is True and performance["sys_stats"]
    later = await get_json(swapper, "/api/performance?after=2999-01-01T00:00:00Z")
    assert (later["sys_stats"], later["gpu_stats"]) == ([], [])
    await get_json(swapper, "/api/performance?after=soon", 400)
    T.assert_decodes(await get_json(swapper, "/api/inflight"), T.INFLIGHT_SNAPSHOT)
    missing = await swapper.post("/api/inflight/999/cancel", b"", headers=KEY)
    assert missing.code == 404
    assert (await body_json(missing))["error"]["message"] == "inflight request not found"

    unload = await swapper.post("/api/models/unload", b"", headers=KEY)
    T.assert_decodes(await body_json(unload), T.MSG_OK)

    swapper.service.observability.performance = None  # performance.disabled
    assert await get_json(swapper, "/api/performance", 503) == {"enabled": False}


@pytest_twisted.ensureDeferred
async def test_events_carry_llama_swaps_payloads_and_request_headers(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    response = await swapper.get("/api/events", headers=KEY, unbuffered=True)
    events = Follow()
    response.deliverBody(events)
    logs_response = await swapper.get("/api/events/logs", headers=KEY, unbuffered=True)
    logs = Follow()
    logs_response.deliverBody(logs)

    chat = await swapper.post("/v1/chat/completions", CHAT, headers={
        **KEY, "Content-Type": "application/json", "User-Agent": "contract-test/1"})
    await treq.content(chat)
    await wait_for(lambda: any(kind == "activity" for kind, _ in events.events()))
    put = await swapper.client.put(swapper.url + "/api/profiles/active", data=b'{"name":null}',
                                   headers={**KEY, "Content-Type": "application/json"})
    assert (await body_json(put)) == {"active": None}
    await wait_for(lambda: [k for k, _ in events.events()].count("profileChanged") == 2)

    payloads: dict[str, Any] = {
        "modelStatus": T.ListOf(T.API_MODEL), "logData": T.LOG_DATA, "uiConfig": T.UI_CONFIG,
        "profileChanged": T.PROFILE_CHANGED, "activity": T.ACTIVITY_EVENT}
    for frame in events.data.decode().split("\n\n"):
        if not frame.startswith("event:message\ndata:"):
            continue
        envelope = json.loads(frame.split("data:", 1)[1])
        T.assert_decodes(envelope, T.EVENT_ENVELOPE)
        data = json.loads(envelope["data"])
        if envelope["type"] == "inflight":
            schema = {"snapshot": T.INFLIGHT_SNAPSHOT, "upsert": T.INFLIGHT_UPSERT,
                      "remove": T.INFLIGHT_REMOVE}[data["operation"]]
            T.assert_decodes(data, schema)
        elif envelope["type"] in payloads:
            T.assert_decodes(data, payloads[envelope["type"]])
    upserts = [d["request"] for kind, d in events.events()
               if kind == "inflight" and d["operation"] == "upsert"]
    assert upserts[0]["req_headers"]["User-Agent"] == "contract-test/1"
    assert all("Authorization" not in u["req_headers"] for u in upserts)
    assert any(u["resp_headers"].get("Content-Type", "").startswith("text/event-stream")
               for u in upserts)

    await wait_for(lambda: any('Request 127.0.0.1 "POST /v1/chat/completions' in data["data"]
                               for _, data in logs.events()))
    assert {kind for kind, _ in logs.events()} == {"logData"}
    stop(events)
    stop(logs)


def _established_to(port: int) -> int:
    """Open TCP connections (as the kernel lists them) whose far end is loopback ``port``."""
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port and fields[3] == "01":
                count += 1
    return count


@pytest_twisted.ensureDeferred
async def test_cancelling_a_stream_closes_the_upstream_and_ends_the_client_clearly(
        llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    obs = swapper.service.observability
    response = await swapper.post("/v1/chat/completions", {**CHAT, "test_stall_after": 2},
                                  headers={**KEY, "Content-Type": "application/json"},
                                  unbuffered=True)
    client = Follow()
    response.deliverBody(client)
    await wait_for(lambda: client.data.count(b"data:") >= 2 and obs.in_flight)
    port = int(swapper.service.processes["m"].model.proxy.rsplit(":", 1)[1])
    assert _established_to(port) >= 1
    (exchange_id,) = list(obs.in_flight)

    cancelled = await swapper.post(f"/api/inflight/{exchange_id}/cancel", b"", headers=KEY)
    assert cancelled.code == 200
    T.assert_decodes(await body_json(cancelled), T.MSG_OK)
    await client.done  # the stream ended: the client is not left waiting
    frames = client.data.decode().strip().split("\n\n")
    assert frames[-1].startswith("event: error\ndata: ")
    assert json.loads(frames[-1].split("data: ", 1)[1])["error"]["code"] == "request_cancelled"
    await wait_for(lambda: _established_to(port) == 0)  # the upstream request was closed
    assert obs.in_flight == {}
    await wait_for(lambda: swapper.service.router.in_flight("m") == 0)
    page = await get_json(swapper, "/api/metrics/activity")
    assert "cancelled" in page["data"][0]["error_msg"]
    again = await swapper.post("/v1/chat/completions", {**CHAT, "stream": False},
                               headers={**KEY, "Content-Type": "application/json"})
    assert again.code == 200  # the model serves on


@pytest_twisted.ensureDeferred
async def test_cancelling_before_the_answer_gives_the_client_an_error(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    obs = swapper.service.observability
    pending = swapper.post("/v1/chat/completions", {**CHAT, "stream": False, "test_delay": 60},
                           headers={**KEY, "Content-Type": "application/json"})
    await wait_for(lambda: obs.in_flight, timeout=30)
    (exchange_id,) = list(obs.in_flight)
    cancelled = await swapper.post(f"/api/inflight/{exchange_id}/cancel", b"", headers=KEY)
    assert cancelled.code == 200
    response = await pending
    assert response.code == 503
    assert (await body_json(response))["error"]["code"] == "request_cancelled"


@pytest_twisted.ensureDeferred
async def test_redirects_health_and_the_request_log_line_are_llama_swaps(llamaswap) -> None:
    swapper = await llamaswap(CONFIG)
    root = await swapper.get("/", allow_redirects=False)
    assert root.code == 302 and root.headers.getRawHeaders("location") == ["/ui"]
    upstream = await swapper.get("/upstream", headers=KEY, allow_redirects=False)
    assert upstream.code == 302
    assert upstream.headers.getRawHeaders("location") == ["/ui/models"]
    html = await swapper.get("/logs", headers={**KEY, "Accept": "text/html"},
                             allow_redirects=False)
    assert html.code == 302 and html.headers.getRawHeaders("location") == ["/ui/"]
    wol = await swapper.get("/wol-health")  # no key needed, as /health
    assert wol.code == 200 and await treq.content(wol) == b"OK"

    await treq.content(await swapper.get("/v1/models?key=hunter2", headers={
        **KEY, "User-Agent": "log-test/2"}))
    await treq.content(await swapper.get("/wol-health"))
    text = (await treq.content(await swapper.get("/logs", headers=KEY))).decode()
    line = re.compile(r'^\[INFO\] Request 127\.0\.0\.1 '
                      r'"GET /v1/models\?key=\[REDACTED\] HTTP/1\.1" 200 \d+ '
                      r'"log-test/2" [0-9.]+(ns|µs|ms|s)$', re.MULTILINE)
    assert line.search(text), text
    assert "hunter2" not in text and "GET /wol-health" not in text


@pytest_twisted.ensureDeferred
async def test_speculative_decoding_counts_reach_the_activity_rows(llamaswap) -> None:
    """llama-server's ``draft_n``/``draft_n_accepted`` timings fill the activity row's
    ``draft_tokens``/``draft_acc_tokens`` (the UI's acceptance rate), streamed or not."""
    swapper = await llamaswap(f"""
models:
  m:
    cmd: {upstream_cmd("m", "--draft-tokens", "20,14")}
""")
    for stream in (False, True):
        response = await swapper.post("/v1/chat/completions", {**CHAT, "stream": stream},
                                      headers={"Content-Type": "application/json"})
        assert response.code == 200
        await treq.content(response)
    rows: list[Any] = []
    for _ in range(200):  # rows are written by the store's thread: poll until both are there
        rows = (await body_json(await swapper.get("/api/metrics/activity")))["data"]
        if len(rows) == 2:
            break
        await sleep(0.05)
    assert [(r["tokens"]["draft_tokens"], r["tokens"]["draft_acc_tokens"]) for r in rows] == [
        (20, 14), (20, 14)]
