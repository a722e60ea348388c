"""Library use: llamaswap mounted under an existing Site and MultiService."""

from __future__ import annotations

import json

import pytest_twisted
import treq
from conftest import free_port, pid_alive, upstream_cmd
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from llamaswap import LlamaSwapService
from llamaswap.config import parse_config


@pytest_twisted.ensureDeferred
async def test_mount_under_an_existing_site_and_multiservice() -> None:
    config = parse_config(f"startPort: {free_port()}\nmodels:\n  m:\n"
                          f"    cmd: {upstream_cmd('m')}\n", "embedded.yaml")
    app = MultiService()
    swapper = LlamaSwapService(config, reactor)
    swapper.setServiceParent(app)
    root = Resource()
    root.putChild(b"hello", Data(b"their own page", "text/plain"))
    root.putChild(b"llm", swapper.resource)
    app.startService()
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}"
    try:
        assert await treq.content(await treq.get(url + "/hello")) == b"their own page"
        response = await treq.post(
            url + "/llm/v1/chat/completions",
            json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
            headers={"Content-Type": "application/json"}, persistent=False)
        assert response.code == 200
        assert json.loads(await treq.content(response))["object"] == "chat.completion"
        # The upstream sees the path relative to llamaswap's mount point.
        echoed = json.loads(await treq.content(
            await treq.get(url + "/llm/upstream/m/echo?a=1", persistent=False)))
        assert echoed["path"] == "/echo?a=1"
        pid = swapper.processes["m"].pid
        assert pid is not None and pid_alive(pid)
    finally:
        await port.stopListening()
        await app.stopService()
    assert not pid_alive(pid)
