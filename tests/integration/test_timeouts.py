"""A model's ``timeouts`` applied to llamaswap's connections to its server (real sockets)."""

from __future__ import annotations

import socket

import pytest_twisted
from conftest import body_json, upstream_cmd
from twisted.internet import reactor


@pytest_twisted.ensureDeferred
async def test_response_header_timeout_ends_a_silent_request_with_a_clear_error(
        llamaswap) -> None:
    swapper = await llamaswap(f"""
models:
  slow:
    cmd: {upstream_cmd("slow")}
    timeouts: {{responseHeader: 1}}
  patient:
    cmd: {upstream_cmd("patient")}
""")
    assert (await swapper.chat("slow")).code == 200  # started; a quick answer is in time
    started = reactor.seconds()
    response = await swapper.chat("slow", test_delay=4)
    took = reactor.seconds() - started
    assert response.code == 502
    body = await body_json(response)
    assert "no response headers within 1s" in body["error"]["message"]
    assert took < 3.5  # not the 4 s the server would have taken
    assert (await swapper.chat("patient", test_delay=1.5)).code == 200  # no limit by default


@pytest_twisted.ensureDeferred
async def test_idle_and_keepalive_settings_reach_the_connection_pool(llamaswap) -> None:
    swapper = await llamaswap(f"""
models:
  m:
    cmd: {upstream_cmd("m")}
    timeouts: {{idleConn: 7, keepalive: 11, connect: 3}}
""")
    assert (await swapper.chat("m")).code == 200
    pool = swapper.service.forwarder.pool
    proxy = swapper.service.config.models["m"].proxy
    key = swapper.service.forwarder._client.origin_of(proxy)
    assert (pool.idle_timeouts[key], pool.keepalives[key]) == (7, 11)
    idle = pool._idle[key]
    assert idle
    timer = idle[-1].idle_timer
    assert timer is not None and 6 < timer.getTime() - reactor.seconds() <= 7
    for connection in idle:
        sock = connection.transport.getHandle()
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 11
