"""Integration harness: a real llamaswap on loopback, real upstream processes, a real client."""

from __future__ import annotations

import json
import os
import random
import shlex
import socket
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.client import Agent, HTTPConnectionPool

from llamaswap.config import parse_config
from llamaswap.listening import with_backlog
from llamaswap.policy import ModelState
from llamaswap.service import LlamaSwapService

UPSTREAM = Path(__file__).resolve().parents[1] / "upstream.py"


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(span: int = 8) -> int:
    """A free loopback port with the next ``span`` ports free too (a config's ``startPort``
    hands out consecutive ports), below the kernel's ephemeral range so that outgoing
    connections do not take them meanwhile."""
    for _ in range(500):
        base = random.randrange(20000, 32000 - span)
        if all(_bindable(base + i) for i in range(span)):
            return base
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def upstream_cmd(model: str, *extra: str) -> str:
    """A ``cmd:`` line running the test upstream for ``model`` on ``${PORT}``."""
    fixed = [sys.executable, str(UPSTREAM), "--port", "${PORT}", "--model", model, "--quiet",
             "--token-delay", "0.01"]
    return " ".join([*fixed, *(shlex.quote(arg) for arg in extra)])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds)


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll ``predicate`` on the reactor until true; fail the test after ``timeout``."""
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await sleep(interval)


class Swapper:
    """A running llamaswap plus a client aimed at it; remembers every model pid it saw."""

    def __init__(self, service: LlamaSwapService, port: int) -> None:
        self.service = service
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.client = HTTPClient(Agent(reactor, pool=self.pool))
        self.pids: set[int] = set()
        self.starts: dict[str, int] = {}
        for process in service.processes.values():
            process.add_observer(self._observe)

    def _observe(self, process: Any, old: ModelState, new: ModelState) -> None:
        if new is ModelState.STARTING:
            self.starts[process.model.id] = self.starts.get(process.model.id, 0) + 1
        if process.pid is not None:
            self.pids.add(process.pid)

    def pid(self, model: str) -> int | None:
        return self.service.processes[model].pid

    def state(self, model: str) -> ModelState:
        return self.service.processes[model].state

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None,
             **kw: Any) -> Deferred[Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"} if headers is None else headers
        return self.client.post(self.url + path, data=data, headers=hdrs, **kw)

    def chat(self, model: str, **extra: Any) -> Deferred[Any]:
        body = {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}
        return self.post("/v1/chat/completions", body)

    def get(self, path: str, **kw: Any) -> Deferred[Any]:
        return self.client.get(self.url + path, **kw)


@pytest_twisted.async_yield_fixture
async def llamaswap(tmp_path: Path) -> AsyncIterator[Any]:
    """Factory: ``await llamaswap(yaml_text)`` starts a llamaswap for that config."""
    running: list[tuple[Swapper, Any]] = []

    async def start(yaml_text: str, adjust: Any = None) -> Swapper:
        """``adjust(config) -> config`` may change what the loader would refuse (e.g. a
        ``healthCheckTimeout`` below its minimum of 15 s, to keep a test short)."""
        text = f"startPort: {free_port()}\n" + textwrap.dedent(yaml_text)
        path = tmp_path / "config.yaml"
        path.write_text(text)
        config = parse_config(text, str(path))
        config = adjust(config) if adjust is not None else config
        service = LlamaSwapService(config, reactor, drain_timeout=2.0)
        service.startService()
        # Listen as ``LlamaSwapService.listen`` does (its backlog), on a port of our own.
        endpoint = serverFromString(reactor, with_backlog("tcp:0:interface=127.0.0.1"))
        listening = await endpoint.listen(service.site())
        swapper = Swapper(service, listening.getHost().port)
        running.append((swapper, listening))
        return swapper

    yield start
    for swapper, listening in running:
        await listening.stopListening()
        if swapper.service.running:
            await swapper.service.stopService()
        await swapper.pool.closeCachedConnections()
        leftover = [pid for pid in swapper.pids if pid_alive(pid)]
        assert leftover == [], f"model processes outlived llamaswap: {leftover}"


async def body_json(response: Any) -> Any:
    return json.loads(await treq.content(response))


def never(d: Deferred) -> None:
    d.addErrback(lambda f: None)


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """llamaswap's log lines (formatted) emitted during the test."""
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace", "").startswith("llamaswap"):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)  # type: ignore[arg-type]
    yield lines
    globalLogPublisher.removeObserver(observe)  # type: ignore[arg-type]


# -- raw websocket upgrades (tests/wsecho.py is the model server) ------------------------

WSECHO = Path(__file__).resolve().parents[1] / "wsecho.py"


def wsecho_cmd() -> str:
    """A ``cmd:`` running the test websocket server (``tests/wsecho.py``) on ``${PORT}``."""
    return f"{sys.executable} {WSECHO} --port ${{PORT}}"


class RawClient(Protocol):
    """Raw bytes to and from llamaswap: an upgrade request, then whatever a test sends."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(None)

    @property
    def status(self) -> int:
        return int(self.received.split(b" ", 2)[1])


async def open_upgrade(port: int, path: str, headers: str = "") -> RawClient:
    """Send a websocket upgrade for ``path`` to llamaswap on ``port``; return once the
    answer's head is in (or the connection closed)."""
    client = RawClient()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    client.transport.write(  # type: ignore[attr-defined]
        f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"{headers}\r\n".encode())
    await wait_for(lambda: b"\r\n\r\n" in client.received or client.closed.called,
                           timeout=30)
    return client
