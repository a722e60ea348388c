"""llama-swap HEAD keys over HTTP: capabilities in /v1/models, upstream.ignorePaths,
compat.ignoreWebsockets and websocket upgrades through /upstream/<model>/."""

from __future__ import annotations

import pytest_twisted
from conftest import body_json, sleep, upstream_cmd, wait_for

from llamaswap.policy import ModelState
from tests.integration.conftest import open_upgrade, wsecho_cmd


@pytest_twisted.ensureDeferred
async def test_capabilities_in_the_model_list(llamaswap) -> None:
    swapper = await llamaswap(f"""
includeAliasesInList: true
models:
  vis:
    cmd: {upstream_cmd("vis")}
    aliases: [eyes]
    metadata: {{context_length: 1, family: x}}
    capabilities: {{in: [text, image], out: [text], tools: true, context: 16384}}
  plain:
    cmd: {upstream_cmd("plain")}
""")
    listing = await body_json(await swapper.get("/v1/models"))
    by_id = {record["id"]: record for record in listing["data"]}
    vis = by_id["vis"]
    assert vis["capabilities"] == {"vision": True, "function_calling": True}
    assert vis["architecture"]["modality"] == "text+image->text"
    assert vis["supported_parameters"] == ["tools", "tool_choice"]
    assert vis["context_length"] == 16384 and vis["meta"]["n_ctx"] == 16384
    assert vis["meta"]["llamaswap"]["family"] == "x"
    assert "context_length" not in vis["meta"]["llamaswap"]  # the capabilities' value wins
    assert by_id["eyes"]["capabilities"] == vis["capabilities"]
    plain = by_id["plain"]
    assert not {"capabilities", "architecture", "context_length"} & set(plain)


WS_CONFIG = f"""
models:
  ws:
    cmd: {wsecho_cmd()}
  ignoring:
    cmd: {wsecho_cmd()}
    compat: {{ignoreWebsockets: true}}
groups:
  all: {{swap: false, members: [ws, ignoring]}}
"""


@pytest_twisted.ensureDeferred
async def test_a_websocket_starts_its_model_and_relays_both_ways(llamaswap) -> None:
    swapper = await llamaswap(WS_CONFIG)
    client = await open_upgrade(swapper.port, "/upstream/ws/chat?room=1")
    head = client.received.split(b"\r\n\r\n", 1)[0]
    assert client.status == 101
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # the server's own
    assert swapper.state("ws") is ModelState.READY
    assert swapper.service.router.in_flight("ws") == 1  # held while the socket is open
    client.received = b""
    client.transport.write(b"\x81\x05hello")
    await wait_for(lambda: client.received == b"\x81\x05hello", timeout=10)
    client.transport.loseConnection()
    await client.closed
    await wait_for(lambda: swapper.service.router.in_flight("ws") == 0, timeout=10)


@pytest_twisted.ensureDeferred
async def test_ignored_websockets_never_start_a_model_but_reach_a_ready_one(llamaswap) -> None:
    swapper = await llamaswap(WS_CONFIG)
    refused = await open_upgrade(swapper.port, "/upstream/ignoring/ws")
    assert refused.status == 409
    assert b"ignored websocket requests cannot start it" in refused.received
    assert swapper.state("ignoring") is ModelState.STOPPED
    assert (await swapper.get("/upstream/ignoring/health")).code == 200  # a page starts it
    client = await open_upgrade(swapper.port, "/upstream/ignoring/ws")
    assert client.status == 101
    assert swapper.service.router.in_flight("ignoring") == 0  # outside the scheduler
    client.received = b""
    client.transport.write(b"ping")
    await wait_for(lambda: client.received == b"ping", timeout=10)
    client.transport.loseConnection()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_a_refused_upgrade_is_a_502_naming_the_answer(llamaswap) -> None:
    swapper = await llamaswap(WS_CONFIG)
    client = await open_upgrade(swapper.port, "/upstream/ws/refuse")
    assert client.status == 502
    assert b"refused the websocket upgrade (HTTP 403)" in client.received


@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_reading_stops_the_model_server_writing(llamaswap) -> None:
    swapper = await llamaswap(WS_CONFIG)
    client = await open_upgrade(swapper.port, "/upstream/ws/flood?mb=24")
    assert client.status == 101
    client.transport.pauseProducing()  # read nothing more

    async def sent() -> int:
        await sleep(1.0)
        return int((await body_json(await swapper.get("/upstream/ws/sent")))["sent"])

    first = await sent()
    second = await sent()
    # The server is blocked once the socket buffers on the way are full: nothing piles up
    # in llamaswap's memory, so it stops getting bytes out.
    assert second - first < 1024 * 1024 and second < 24 * 1024 * 1024
    client.transport.resumeProducing()
    await wait_for(lambda: len(client.received) > 24 * 1024 * 1024, timeout=60)
    await client.closed  # the server closed after the last byte: so does the relay


@pytest_twisted.ensureDeferred
async def test_ignore_paths_do_not_start_a_model(llamaswap) -> None:
    swapper = await llamaswap(f"""
upstream: {{ignorePaths: ['^/assets/']}}
models:
  m:
    cmd: {upstream_cmd("m")}
""")
    refused = await swapper.get("/upstream/m/assets/app.css")
    assert refused.code == 409
    assert "path matches upstream.ignorePaths" in (await body_json(refused))["error"]["message"]
    assert swapper.state("m") is ModelState.STOPPED
    assert (await swapper.get("/upstream/m/health")).code == 200  # started by a real page
    served = await swapper.get("/upstream/m/assets/app.css")
    assert served.code != 409  # the model is ready: passed through to it


@pytest_twisted.ensureDeferred
async def test_the_default_ignore_paths_cover_static_files(llamaswap) -> None:
    swapper = await llamaswap(f"models:\n  m:\n    cmd: {upstream_cmd('m')}\n")
    for path in ("/upstream/m/favicon.ico", "/upstream/m/static/main.js",
                 "/upstream/m/manifest.json"):
        assert (await swapper.get(path)).code == 409, path
    assert swapper.state("m") is ModelState.STOPPED


@pytest_twisted.ensureDeferred
async def test_comfyui_routes(llamaswap) -> None:
    swapper = await llamaswap(f"models:\n  comfyui_auto:\n    cmd: {wsecho_cmd()}\n")
    redirect = await swapper.get("/comfyui?x=1", allow_redirects=False)
    assert (redirect.code, redirect.headers.getRawHeaders("location")) == (301, ["/comfyui/?x=1"])
    early = await swapper.get("/comfyui/api/queue")
    assert early.code == 409
    assert "only /comfyui/ can start it" in (await body_json(early))["error"]["message"]
    assert swapper.state("comfyui_auto") is ModelState.STOPPED
    assert (await swapper.get("/comfyui/")).code == 200  # the root starts it
    assert (await swapper.get("/comfyui/api/queue")).code == 200
    client = await open_upgrade(swapper.port, "/comfyui/ws?clientId=1")
    assert client.status == 101
    client.transport.loseConnection()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_comfyui_without_the_model_is_404(llamaswap) -> None:
    swapper = await llamaswap(f"models:\n  m:\n    cmd: {upstream_cmd('m')}\n")
    assert (await swapper.get("/comfyui/")).code == 404
