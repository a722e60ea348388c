"""Harness for the llama-swap compatibility suite.

The suite replays the scenarios of llama-swap's own Go tests against llamaswap from outside:
over HTTP against a real llamaswap on loopback driving the test upstream (``tests/upstream.py``),
or through ``llamaswap check-config``. The integration harness already provides the running
llamaswap; its fixtures are re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from llamaswap.cli import main as llamaswap_cli
from tests.integration import conftest as integration_conftest

harness = integration_conftest
llamaswap = harness.llamaswap
logged = harness.logged
# Also what ``from conftest import ...`` finds when this is the latest conftest pytest loaded
# and an integration module is imported from here (the contract tests do that).
body_json, upstream_cmd, wait_for = harness.body_json, harness.upstream_cmd, harness.wait_for


@dataclass
class Checked:
    """What ``llamaswap check-config --format json`` answered."""

    status: int
    resolved: dict[str, Any]
    errors: str

    @property
    def ok(self) -> bool:
        return self.status == 0


@pytest.fixture
def check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """``check_config(yaml_text) -> Checked``: run the ``check-config`` command on a file."""
    counter = iter(range(1_000_000))

    def run(yaml_text: str) -> Checked:
        path = tmp_path / f"config-{next(counter)}.yaml"
        path.write_text(yaml_text)
        capsys.readouterr()
        status = llamaswap_cli(["check-config", str(path), "--format", "json"])
        out, err = capsys.readouterr()
        return Checked(status, json.loads(out) if status == 0 else {}, err)

    return run


def own_port_model(name: str, *extra: str, indent: int = 4) -> str:
    """``cmd:`` and ``proxy:`` lines for a model block running the test upstream as ``name``
    on a port of its own (see ``tests/integration/api_ports.py`` for why not ``${PORT}``)."""
    port = harness.free_port()
    cmd = harness.upstream_cmd(name, *extra).replace("${PORT}", str(port))
    return f"cmd: {cmd}\n{' ' * indent}proxy: http://127.0.0.1:{port}"


class _EchoResource(Resource):
    """A stand-in for a peer (a remote OpenAI-compatible server): answers every request with
    what it received, as JSON (as one server-sent event when the body asks for a stream), so
    a test can see what llamaswap forwarded."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []

    def render(self, request: Request) -> bytes:
        body = request.content.read() if request.content is not None else b""
        seen = {
            "path": request.uri.decode(),
            "method": request.method.decode(),
            "headers": {k.decode().lower(): v[0].decode()
                        for k, v in request.requestHeaders.getAllRawHeaders()},
            "body": body.decode("utf-8", "replace"),
        }
        self.seen.append(seen)
        answer = json.dumps({"peer": True, "received": seen})
        if b'"stream": true' in body or b'"stream":true' in body:
            request.setHeader(b"content-type", b"text/event-stream")
            return f"data: {answer}\n\ndata: [DONE]\n\n".encode()
        request.setHeader(b"content-type", b"application/json")
        return answer.encode()


@dataclass
class EchoPeer:
    url: str
    resource: _EchoResource

    @property
    def seen(self) -> list[dict[str, Any]]:
        return self.resource.seen


@pytest_twisted.async_yield_fixture
async def echo_peer() -> AsyncIterator[EchoPeer]:
    """A running echo peer on loopback."""
    resource = _EchoResource()
    listening = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    yield EchoPeer(f"http://127.0.0.1:{listening.getHost().port}", resource)
    await listening.stopListening()
