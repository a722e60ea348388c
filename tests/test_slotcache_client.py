"""llama-server's slot API client against a real HTTP server on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from llamaswap.slotcache.client import HttpSlotApi, SlotApiError


class SlotServer(Resource):
    """Answers like llama-server: ``/props``, ``/slots`` and ``POST /slots/<id>?action=``."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, Any, str]] = []

    def render(self, request: Request) -> bytes:
        body = request.content.read() if request.content else b""
        auth = (request.getHeader("authorization") or "")
        self.seen.append((request.method.decode(), request.uri.decode(),
                          json.loads(body) if body else None, auth))
        request.setHeader("content-type", "application/json")
        path = request.path.decode()
        if path == "/props":
            return json.dumps({"total_slots": 2}).encode()
        if path == "/slots":
            return json.dumps([{"id": 0, "n_prompt_tokens": 5}]).encode()
        if path == "/slots/0":
            return json.dumps({"id_slot": 0, "n_saved": 5, "n_written": 99}).encode()
        if path == "/slots/1":
            request.setResponseCode(400)
            return json.dumps({"error": {"code": 400, "message": "Invalid slot ID"}}).encode()
        request.setHeader("content-type", "text/html")
        return b"<html>not here</html>"


@pytest_twisted.async_yield_fixture
async def server() -> AsyncIterator[tuple[SlotServer, str]]:
    resource = SlotServer()
    port: Any = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")  # type: ignore[attr-defined]
    try:
        yield resource, f"http://127.0.0.1:{port.getHost().port}/"
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_calls_carry_the_models_headers_and_decode_json(
        server: tuple[SlotServer, str]) -> None:
    resource, url = server
    api = HttpSlotApi(reactor, url, [("Authorization", "Bearer k")])
    assert await api.props() == {"total_slots": 2}
    assert await api.slots() == [{"id": 0, "n_prompt_tokens": 5}]
    assert (await api.save(0, "slot-0.bin"))["n_written"] == 99
    await api.restore(0, "slot-0.bin")
    assert resource.seen == [
        ("GET", "/props", None, "Bearer k"), ("GET", "/slots", None, "Bearer k"),
        ("POST", "/slots/0?action=save", {"filename": "slot-0.bin"}, "Bearer k"),
        ("POST", "/slots/0?action=restore", {"filename": "slot-0.bin"}, "Bearer k")]


@pytest_twisted.ensureDeferred
async def test_an_error_answer_is_a_slot_api_error_with_the_servers_message(
        server: tuple[SlotServer, str]) -> None:
    _, url = server
    api = HttpSlotApi(reactor, url)
    with pytest.raises(SlotApiError, match="HTTP 400: Invalid slot ID") as error:
        await api.restore(1, "slot-1.bin")
    assert error.value.status == 400
    with pytest.raises(SlotApiError, match="not JSON"):
        await api.save(7, "slot-7.bin")
