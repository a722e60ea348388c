"""The floor for any Python proxy: a bare TCP byte relay on uvloop, no HTTP at all.

``python bench/floor.py --listen PORT --upstream PORT`` pipes each client connection to its
own upstream connection and copies bytes both ways, with nothing parsed, logged or routed.
No HTTP proxy written in Python can be faster than this on one core, so ``bench/run.py
--only floor`` measures it beside llamaswap and nginx: the ratio shows how much of the gap to
nginx is CPython itself rather than llamaswap.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any


class Pipe(asyncio.Protocol):
    """One side of a relayed connection; ``peer`` is the other side's transport."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.peer: Any = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.pending.append(data)
        else:
            self.peer.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()


class Client(Pipe):
    def __init__(self, upstream: int) -> None:
        super().__init__()
        self.upstream = upstream

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(Pipe, "127.0.0.1", self.upstream)
        upstream.peer = self.transport
        self.peer = upstream.transport
        for data in self.pending:
            self.peer.write(data)
        self.pending = []


async def serve(listen: int, upstream: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(upstream), "127.0.0.1", listen,
                                      backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--upstream", type=int, required=True)
    ns = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(ns.listen, ns.upstream))


if __name__ == "__main__":
    main()
