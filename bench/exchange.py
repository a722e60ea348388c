"""The upstream client's own CPU per exchange, in-process: no sockets, no reactor.

``PYTHONPATH=<checkout> python bench/exchange.py`` sends POSTs through the client and its
pool on an in-memory transport and answers each with a small JSON body, then with a stream
of 16 SSE events (52 bytes each, one chunk per read); it prints the best of 5 rounds in µs
per exchange (``time.process_time``). Run it for two checkouts in turn to compare their
clients without a shared machine's noise: the figure is CPU time, not wall time. A checkout
from before ``llamaswap/upstream/`` is measured on ``web/h1client.py``.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.http_headers import Headers

try:
    from llamaswap.upstream import UpstreamClient as Client
    KIND = "llamaswap/upstream"
except ImportError:  # a checkout from before the one upstream client
    from llamaswap.web.h1client import H1Client as Client  # type: ignore[no-redef]
    KIND = "web/h1client.py"

URL = "http://127.0.0.1:8081/v1/chat/completions"
BODY = b'{"model":"bench","messages":[{"role":"user","content":"hi"}]}'
SMALL = [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 120\r\n\r\n"
         + b"x" * 120]
EVENT = b"data: " + b"y" * 44 + b"\n\n"
STREAM = ([b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n"]
          + [b"%x\r\n%s\r\n" % (len(EVENT), EVENT)] * 16 + [b"0\r\n\r\n"])


class Endpoint:
    """Every connection on a ``StringTransport``."""

    def __init__(self) -> None:
        self.connections: list[tuple[Any, StringTransport]] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)

    def endpointForURI(self, uri: Any) -> Endpoint:
        return self


class Sink(Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass


def exchange(client: Any, endpoint: Endpoint, answer: list[bytes]) -> None:
    headers = Headers({b"content-type": [b"application/json"]})
    d = Deferred.fromCoroutine(client.request(b"POST", URL, headers, BODY))
    connection, transport = endpoint.connections[-1]
    transport.clear()
    for part in answer:
        connection.dataReceived(part)
    heads: list[Any] = []
    d.addBoth(heads.append)
    heads[0].deliverBody(Sink())


def main() -> None:
    endpoint = Endpoint()
    client = Client(Clock(), endpoint)  # type: ignore[arg-type]
    for name, answer in (("small JSON answer", SMALL), ("stream of 16 chunks", STREAM)):
        best = float("inf")
        for _ in range(5):
            count = 20_000
            started = time.process_time()
            for _ in range(count):
                exchange(client, endpoint, answer)
            best = min(best, (time.process_time() - started) / count * 1e6)
        assert len(endpoint.connections) == 1, "every exchange reuses the one connection"
        print(f"{KIND}\t{name}\t{best:.1f} µs")


if __name__ == "__main__":
    main()
