"""llama-swap's ``internal/router`` scenarios for websockets (``compat.ignoreWebsockets``)
and for peers (their timeouts, none configured, shutdown), beyond those in
``test_go_router.py``; replayed over HTTP against a real llamaswap whose models are the test
websocket server (``tests/wsecho.py``) or the test upstream, and whose peers are in-process
stand-ins.

llama-swap checks its router with fake processes and reads its peer transport's settings;
here what a client sees is checked: the answer, the switch of protocols, which processes
run, how long a peer is waited for.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
import treq
from twisted.internet.defer import Deferred

from llamaswap.policy import ModelState
from tests.compat.support import HoldingPeer, harness, open_upgrade, own_port_model, wsecho_cmd

body_json = harness.body_json
wait_for = harness.wait_for


async def loaded(swapper: Any, model: str) -> None:
    response = await swapper.get(f"/upstream/{model}/health")
    assert response.code == 200
    await treq.content(response)


# --- base_test.go: websockets -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_open_ignored_websocket_does_not_block_a_swap(llamaswap) -> None:
    """follows internal/router TestBaseRouter_IgnoreWebsocketsDoesNotBlockSwap"""
    swapper = await llamaswap(f"""
models:
  a:
    cmd: {wsecho_cmd()}
    compat: {{ignoreWebsockets: true}}
  b:
    {own_port_model("b")}
groups:
  g: {{swap: true, exclusive: true, members: [a, b]}}
""")
    await loaded(swapper, "a")
    pid_a = swapper.pid("a")
    socket = await open_upgrade(swapper.port, "/props?model=a")
    assert socket.status == 101
    answer = await body_json(await swapper.chat("b"))  # swaps a out, socket open or not
    assert answer["model"] == "b"
    assert swapper.pid("a") is None and not harness.pid_alive(pid_a)
    await socket.closed  # the model server went away: so did its socket


@pytest_twisted.ensureDeferred
async def test_an_ignored_websocket_starts_nothing(llamaswap) -> None:
    """follows internal/router TestBaseRouter_IgnoreWebsocketsRejectsModelUnlessReady"""
    swapper = await llamaswap(f"""
models:
  a:
    {own_port_model("a", "--never-healthy")}
    compat: {{ignoreWebsockets: true}}
""")
    for path in ("/props?model=a", "/upstream/a/props"):  # stopped
        refused = await open_upgrade(swapper.port, path)
        assert refused.status == 409, path
        assert b"not loaded" in refused.received, path
    assert swapper.starts == {}
    starting = swapper.chat("a")
    starting.addErrback(lambda failure: None)
    await wait_for(lambda: swapper.state("a") is ModelState.STARTING, timeout=20)
    for path in ("/props?model=a", "/upstream/a/props"):  # starting
        refused = await open_upgrade(swapper.port, path)
        assert refused.status == 409, path
    assert swapper.starts == {"a": 1}
    starting.cancel()


@pytest_twisted.ensureDeferred
async def test_a_websocket_starts_its_model_by_default(llamaswap) -> None:
    """follows internal/router TestBaseRouter_WebsocketStartsModelWhenCompatDisabled"""
    swapper = await llamaswap(f"models:\n  a:\n    cmd: {wsecho_cmd()}\n")
    socket = await open_upgrade(swapper.port, "/props?model=a")
    assert socket.status == 101
    assert swapper.starts == {"a": 1} and swapper.state("a") is ModelState.READY
    socket.received = b""
    socket.transport.write(b"ping")  # type: ignore[attr-defined]
    await wait_for(lambda: socket.received == b"ping", timeout=20)
    socket.transport.loseConnection()  # type: ignore[attr-defined]
    await socket.closed


# --- peer_test.go ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_config_without_peers_serves_local_models_only(llamaswap) -> None:
    """follows internal/router TestNewPeer_EmptyPeers"""
    swapper = await llamaswap(f"models:\n  m:\n    {own_port_model('m')}\n")
    listing = await body_json(await swapper.get("/v1/models"))
    assert [record["id"] for record in listing["data"]] == ["m"]
    response = await swapper.chat("peer/m")
    assert response.code == 404
    await treq.content(response)


@pytest_twisted.ensureDeferred
async def test_a_peers_own_response_header_timeout_applies(llamaswap) -> None:
    """follows internal/router TestNewPeer_CustomTimeouts"""
    peer = HoldingPeer()
    listening = peer.listen()
    try:
        swapper = await llamaswap(f"""
peers:
  slow:
    proxy: http://127.0.0.1:{listening.getHost().port}
    models: [model1]
    timeouts: {{connect: 45, responseHeader: 1, tlsHandshake: 15, expectContinue: 2,
               idleConn: 120}}
""")
        response = await swapper.chat("model1")
        assert response.code == 504
        message = (await body_json(response))["error"]["message"]
        assert "slow" in message and "1s" in message
        assert [model for model, _ in peer.waiting] == ["model1"]
    finally:
        peer.answer_all()
        await listening.stopListening()


async def peer_swapper(llamaswap: Any, port: int) -> Any:
    return await llamaswap(f"""
peers:
  peer1: {{proxy: "http://127.0.0.1:{port}", models: [test-model]}}
""")


@pytest_twisted.ensureDeferred
async def test_after_shutdown_a_peer_request_is_refused(llamaswap) -> None:
    """follows internal/router TestPeer_ServeHTTP_ShutdownRejectsNewRequests"""
    peer = HoldingPeer()
    listening = peer.listen()
    try:
        swapper = await peer_swapper(llamaswap, listening.getHost().port)
        await swapper.service.stopService()
        response = await swapper.chat("test-model")
        assert response.code >= 500
        assert "shutting down" in (await body_json(response))["error"]["message"]
        assert peer.waiting == []
    finally:
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_shutdown_waits_for_a_peer_request_in_flight(llamaswap) -> None:
    """follows internal/router TestPeer_ServeHTTP_WaitsForInflightDuringShutdown"""
    peer = HoldingPeer()
    listening = peer.listen()
    try:
        swapper = await peer_swapper(llamaswap, listening.getHost().port)
        swapper.service.drain_timeout = 60.0
        pending = swapper.chat("test-model")
        await wait_for(lambda: len(peer.waiting) == 1, timeout=20)
        stopping: Deferred[None] = swapper.service.stopService()
        await harness.sleep(0.3)  # a chance to finish early, which it must not take
        assert not stopping.called
        peer.answer_all()
        response = await pending
        assert response.code == 200
        assert await body_json(response) == {"ok": True}
        await stopping
    finally:
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_shutdown_cuts_a_peer_request_past_the_drain_timeout(llamaswap) -> None:
    """follows internal/router TestPeer_ServeHTTP_ShutdownTimeoutCancelsInflight"""
    peer = HoldingPeer()
    listening = peer.listen()
    try:
        swapper = await peer_swapper(llamaswap, listening.getHost().port)
        swapper.service.drain_timeout = 0.5
        pending = swapper.chat("test-model")
        await wait_for(lambda: len(peer.waiting) == 1, timeout=20)
        await swapper.service.stopService()  # returns although the peer never answers
        response = await pending
        assert response.code >= 500
        await treq.content(response)
        (_, request), = peer.waiting
        await wait_for(lambda: request._disconnected, timeout=20)  # noqa: SLF001
    finally:
        await listening.stopListening()
