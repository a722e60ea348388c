"""Helpers of the llama-swap compatibility suite, importable by its modules
(``from tests.compat.support import ...``; the fixtures are in ``conftest.py``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from tests.integration import conftest as harness
from tests.integration.conftest import RawClient, open_upgrade, wsecho_cmd

__all__ = ["EchoPeer", "EchoResource", "Follow", "HoldingPeer", "RawClient", "harness",
           "open_upgrade", "own_port_model", "wsecho_cmd"]

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


class Follow(Protocol):
    """Collects a streamed response body as it arrives; ``events()`` decodes it as
    llamaswap's ``/api/events`` frames."""

    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(None)

    def events(self) -> list[tuple[str, Any]]:
        out = []
        for line in self.data.decode("utf-8", "replace").split("\n"):
            if line.startswith("data:{"):
                try:
                    envelope = json.loads(line[5:])
                except ValueError:  # the frame's end has not arrived yet
                    continue
                out.append((envelope["type"], json.loads(envelope["data"])))
        return out

    def stop(self) -> None:
        self.transport.stopProducing()  # type: ignore[attr-defined]


class HoldingPeer(Resource):
    """A stand-in peer that answers only when the test says so (``answer_all``); it
    remembers the model each waiting request asked for."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[tuple[str, Request]] = []

    def render(self, request: Request) -> Any:
        body = request.content.read() if request.content is not None else b""
        self.waiting.append((json.loads(body or b"{}").get("model", ""), request))
        return NOT_DONE_YET

    def answer_all(self) -> None:
        for _, request in self.waiting:
            if not request.finished and not request._disconnected:  # noqa: SLF001
                request.setHeader(b"content-type", b"application/json")
                request.write(b'{"ok": true}')
                request.finish()
        self.waiting = []

    def listen(self) -> IListeningPort:
        """Serve on a free loopback port (``.getHost().port``); stop it when done."""
        return reactor.listenTCP(0, Site(self), interface="127.0.0.1")


@dataclass
class Checked:
    """What ``llamaswap check-config --format json`` answered."""

    status: int
    resolved: dict[str, Any]
    errors: str

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def models(self) -> dict[str, Any]:
        return dict(self.resolved["models"])
