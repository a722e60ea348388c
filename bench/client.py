"""Streaming load generator: N keep-alive connections issuing streamed requests back to back.

``python bench/client.py --port P --concurrency N --duration S [--tokens T --interval I]``
prints one JSON object: completed streams, streams/s, errors, time to first token and
inter-chunk gaps (p50/p99, milliseconds). ``--hold N`` instead opens N streams, waits until
each has received its first event, prints ``{"held": N}``, waits for a line on stdin (the
caller measures memory meanwhile) and closes them.

Time to first byte is measured from writing the request to receiving the first body bytes
(the head and the first event arrive together from ``bench/upstream.py``); a gap is the time
between two reads that carried body bytes, which is what a user watching tokens sees.
It is a bare ``asyncio.Protocol`` on uvloop when available, so that the client stays cheap;
it runs bounded (``--duration``), on loopback, and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

TERMINATOR = b"0\r\n\r\n"


class StreamConnection(asyncio.Protocol):
    """One keep-alive connection; ``request()`` sends one streamed request and awaits its end."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.waiter: asyncio.Future[bool] | None = None
        self.first: asyncio.Future[None] | None = None
        self.in_head = True
        self.head = b""
        self.tail = b""
        self.sent_at = 0.0
        self.last = 0.0
        self.ttfb: float | None = None
        self.gaps: list[float] = []
        self.lost = False
        self.content_length: int | None = None
        self.body_seen = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(False)
        if self.first is not None and not self.first.done():
            self.first.set_result(None)

    def send(self, raw: bytes) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.first = loop.create_future()
        self.in_head, self.head, self.tail = True, b"", b""
        self.ttfb, self.content_length, self.body_seen = None, None, 0
        self.sent_at = time.perf_counter()
        self.transport.write(raw)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.in_head:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4:]
            self.in_head = False
            status = head[9:12]
            if status != b"200":
                self.finish(False)
                return
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                self.content_length = int(lower[at + 17:stop if stop >= 0 else None])
            if not data:
                return
        if self.ttfb is None:
            self.ttfb = now - self.sent_at
            if self.first is not None and not self.first.done():
                self.first.set_result(None)
        else:
            self.gaps.append(now - self.last)
        self.last = now
        if self.content_length is not None:
            self.body_seen += len(data)
            if self.body_seen >= self.content_length:
                self.finish(True)
            return
        tail = (self.tail + data)[-5:]
        self.tail = tail
        if tail == TERMINATOR:
            self.finish(True)

    def finish(self, ok: bool) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(ok)
        if not ok and self.transport is not None:
            self.transport.close()


def build_request(host: str, port: int, path: str, tokens: int | None,
                  interval: float | None, model: str) -> bytes:
    body = json.dumps({"model": model, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    extra = ""
    if tokens is not None:
        extra += f"x-bench-tokens: {tokens}\r\n"
    if interval is not None:
        extra += f"x-bench-interval: {interval}\r\n"
    return (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{extra}\r\n").encode() + body


async def connect(host: str, port: int) -> StreamConnection:
    loop = asyncio.get_running_loop()
    for attempt in range(50):
        try:
            _, protocol = await loop.create_connection(StreamConnection, host, port)
            return protocol
        except OSError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.02)
    raise AssertionError("unreachable")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


async def load(ns: argparse.Namespace) -> dict[str, Any]:
    raw = build_request(ns.host, ns.port, ns.path, ns.tokens, ns.interval, ns.model)
    ttfbs: list[float] = []
    gaps: list[float] = []
    counts = {"completed": 0, "errors": 0}
    started = time.perf_counter()
    deadline = started + ns.duration

    async def worker(delay: float) -> None:
        await asyncio.sleep(delay)  # spread connection set-up over the first ~100 ms
        connection: StreamConnection | None = None
        while time.perf_counter() < deadline:
            if connection is None or connection.lost:
                try:
                    connection = await connect(ns.host, ns.port)
                except OSError:
                    counts["errors"] += 1
                    return
            connection.gaps = gaps
            ok = await connection.send(raw)
            if ok:
                counts["completed"] += 1
                if connection.ttfb is not None:
                    ttfbs.append(connection.ttfb)
            else:
                counts["errors"] += 1
                connection = None
        if connection is not None and connection.transport is not None:
            connection.transport.close()

    await asyncio.gather(*(worker(i * 0.1 / ns.concurrency) for i in range(ns.concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "concurrency": ns.concurrency, "duration_s": round(elapsed, 3),
        "completed": counts["completed"], "errors": counts["errors"],
        "streams_per_s": round(counts["completed"] / elapsed, 2),
        "ttfb_p50_ms": ms(percentile(ttfbs, 50)), "ttfb_p99_ms": ms(percentile(ttfbs, 99)),
        "gap_p50_ms": ms(percentile(gaps, 50)), "gap_p99_ms": ms(percentile(gaps, 99)),
    }


async def hold(ns: argparse.Namespace) -> None:
    """Open ``ns.hold`` streams, report once all have started, close them on a stdin line."""
    raw = build_request(ns.host, ns.port, ns.path, ns.tokens, ns.interval, ns.model)
    connections: list[StreamConnection] = []
    for start in range(0, ns.hold, 100):  # in batches, so no listen backlog overflows
        batch = await asyncio.gather(*(connect(ns.host, ns.port)
                                       for _ in range(start, min(ns.hold, start + 100))))
        for connection in batch:
            connection.send(raw)
        connections.extend(batch)
    await asyncio.wait_for(asyncio.gather(*(c.first for c in connections if c.first)),
                           timeout=ns.duration)
    started = sum(1 for c in connections if c.ttfb is not None)
    print(json.dumps({"held": started}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for connection in connections:
        if connection.transport is not None:
            connection.transport.abort()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/chat/completions")
    parser.add_argument("--model", default="bench")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--tokens", type=int, default=None)
    parser.add_argument("--interval", type=float, default=None)
    parser.add_argument("--hold", type=int, default=0)
    ns = parser.parse_args(argv)
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    if ns.hold:
        asyncio.run(hold(ns))
    else:
        print(json.dumps(asyncio.run(load(ns))), flush=True)


if __name__ == "__main__":
    main()
