"""Helpers of the llama-swap compatibility suite, importable by its modules
(``from tests.compat.support import ...``; the fixtures are in ``conftest.py``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from tests.integration import conftest as harness

__all__ = ["EchoPeer", "EchoResource", "harness", "own_port_model"]


def own_port_model(name: str, *extra: str, indent: int = 4) -> str:
    """``cmd:`` and ``proxy:`` lines for a model block running the test upstream as ``name``
    on a port of its own (see ``tests/integration/api_ports.py`` for why not ``${PORT}``)."""
    port = harness.free_port()
    cmd = harness.upstream_cmd(name, *extra).replace("${PORT}", str(port))
    return f"cmd: {cmd}\n{' ' * indent}proxy: http://127.0.0.1:{port}"


class EchoResource(Resource):
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
    resource: EchoResource

    @property
    def seen(self) -> list[dict[str, Any]]:
        return self.resource.seen
