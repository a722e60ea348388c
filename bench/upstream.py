"""A fast fake model server for the benchmarks: it must never be the bottleneck.

``python bench/upstream.py --port N [--startup-delay S] [--tokens N] [--interval S]
[--chunk-size BYTES] [--uvloop]``

It speaks just enough HTTP/1.1 (keep-alive, ``Content-Length`` request bodies, chunked
responses) on a bare ``asyncio.Protocol``, with no per-request allocation beyond the request
itself: streamed events are pre-built once per size. Unlike ``llamaswap.demo`` it does no
JSON decoding, tokenising or logging, so one core serves tens of thousands of small requests a
second (``python bench/run.py --only upstream`` checks that before anything is compared).

- ``GET /health`` answers 503 until ``--startup-delay`` seconds after start (a model loading),
  then 200, like llama-server. At that moment it prints one line to stdout (flushed), as
  llama-server does: ``server is listening on http://HOST:PORT - all slots are idle``.
- ``POST`` anything: a body containing ``"stream": true`` gets ``--tokens`` server-sent events
  of ``--chunk-size`` bytes each, ``--interval`` seconds apart (0: back to back, yielding to the
  event loop between events so each one is its own write), then ``data: [DONE]``; the first
  event goes out with the response head. Otherwise a small JSON completion. Request headers
  ``x-bench-tokens``, ``x-bench-interval`` and ``x-bench-chunk-size`` override the defaults
  for one request, so one process serves every scenario.
- SIGTERM or SIGINT exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from typing import Any

STARTED = time.monotonic()

COMPLETION = (b'{"id":"cmpl-bench","object":"chat.completion","created":0,"model":"bench",'
              b'"choices":[{"index":0,"message":{"role":"assistant","content":"hello"},'
              b'"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,'
              b'"total_tokens":2}}')
JSON_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
             + str(len(COMPLETION)).encode() + b"\r\n\r\n")
STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
               b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
DONE = b"data: [DONE]\n\n"
DONE_FRAME = b"%x\r\n%s\r\n0\r\n\r\n" % (len(DONE), DONE)
HEALTHY = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n" \
          b'{"status":"ok"}'
LOADING = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
BAD = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"

_frames: dict[int, bytes] = {}


def event_frame(size: int) -> bytes:
    """One chunked-encoding frame holding an SSE event of ``size`` bytes (cached)."""
    frame = _frames.get(size)
    if frame is None:
        prefix = b'data: {"choices":[{"index":0,"delta":{"content":"'
        suffix = b'"}}]}\n\n'
        event = prefix + b"x" * max(1, size - len(prefix) - len(suffix)) + suffix
        frame = _frames[size] = b"%x\r\n%s\r\n" % (len(event), event)
    return frame


class Options:
    def __init__(self, ns: argparse.Namespace) -> None:
        self.ready_at = STARTED + ns.startup_delay
        self.ready = False
        """Set when the ready line is printed, so a probe it prompts is never answered 503."""
        self.tokens: int = ns.tokens
        self.interval: float = ns.interval
        self.chunk_size: int = ns.chunk_size


class BenchHTTP(asyncio.Protocol):
    def __init__(self, options: Options) -> None:
        self.options = options
        self.buffer = b""
        self.transport: Any = None
        self.streaming = False  # one response at a time; pipelined requests wait

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.streaming:
            self.process()

    def process(self) -> None:
        while self.transport is not None and not self.streaming:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            lower = head.lower()
            length = 0
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                line_end = lower.find(b"\r\n", at + 2)
                length = int(lower[at + 17:line_end if line_end >= 0 else None])
            elif b"\r\ntransfer-encoding:" in lower:
                self.transport.write(BAD)
                self.transport.close()
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            self.respond(head, lower, body)

    def respond(self, head: bytes, lower: bytes, body: bytes) -> None:
        transport = self.transport
        if head.startswith(b"GET /health"):
            ready = self.options.ready or time.monotonic() >= self.options.ready_at
            transport.write(HEALTHY if ready else LOADING)
        elif head.startswith(b"POST "):
            if b'"stream": true' in body or b'"stream":true' in body:
                self.stream(lower)
                return
            transport.write(JSON_HEAD + COMPLETION)
        else:
            transport.write(NOT_FOUND)
        if b"\r\nconnection: close" in lower:
            transport.close()

    def stream(self, lower: bytes) -> None:
        tokens = int(_header(lower, b"x-bench-tokens", self.options.tokens))
        interval = float(_header(lower, b"x-bench-interval", self.options.interval))
        frame = event_frame(int(_header(lower, b"x-bench-chunk-size", self.options.chunk_size)))
        close = b"\r\nconnection: close" in lower
        self.streaming = True
        self.transport.write(STREAM_HEAD + frame)
        loop = asyncio.get_running_loop()

        def tick(left: int) -> None:
            transport = self.transport
            if transport is None:
                return
            if left == 0:
                transport.write(DONE_FRAME)
                self.streaming = False
                if close:
                    transport.close()
                else:
                    self.process()
                return
            transport.write(frame)
            if interval > 0:
                loop.call_later(interval, tick, left - 1)
            else:
                loop.call_soon(tick, left - 1)

        if interval > 0:
            loop.call_later(interval, tick, tokens - 1)
        else:
            loop.call_soon(tick, tokens - 1)


def _header(lower: bytes, name: bytes, default: Any) -> Any:
    at = lower.find(b"\r\n" + name + b":")
    if at < 0:
        return default
    end = lower.find(b"\r\n", at + 2)
    return lower[at + len(name) + 3:end if end >= 0 else None].strip().decode()


async def serve(ns: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    options = Options(ns)
    server = await loop.create_server(lambda: BenchHTTP(options), ns.host, ns.port,
                                      backlog=4096, reuse_address=True)

    def announce() -> None:
        options.ready = True
        sys.stdout.write(f"server is listening on http://{ns.host}:{ns.port}"
                         " - all slots are idle\n")
        sys.stdout.flush()

    # asyncio's loop.time() is time.monotonic(), the clock ``ready_at`` is on.
    loop.call_at(max(options.ready_at, loop.time()), announce)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with server:
        await stop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--startup-delay", type=float, default=0.0,
                        help="seconds /health answers 503 after start (model load time)")
    parser.add_argument("--tokens", type=int, default=32, help="events per streamed answer")
    parser.add_argument("--interval", type=float, default=0.01,
                        help="seconds between events (0: back to back)")
    parser.add_argument("--chunk-size", type=int, default=128, help="bytes per event")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop if installed")
    ns = parser.parse_args(argv)
    if ns.uvloop:
        try:
            import uvloop
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    asyncio.run(serve(ns))
    os._exit(0)  # do not wait for connections still open: a stopped model is gone


if __name__ == "__main__":
    main()
