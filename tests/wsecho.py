"""Test-only websocket server: ``python tests/wsecho.py --port N``.

``GET /health`` answers 200. An upgrade request (``Upgrade: websocket``) is answered ``101``
with the handshake's ``Sec-WebSocket-Accept``; then the connection echoes every byte, except
on ``/flood?mb=N``, where it writes N MiB as fast as the peer takes them (``GET /sent``
tells how many bytes it got into the socket so far: a peer that stops reading stops it).
``/refuse`` answers an upgrade with 403.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
sent = 0


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global sent
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        writer.close()
        return
    lines = head.decode("latin-1").split("\r\n")
    target = lines[0].split(" ")[1]
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:] if line)}
    if headers.get("upgrade", "").lower() != "websocket":
        body = json.dumps({"sent": sent, "headers": headers}).encode() \
            if target.startswith("/sent") else b"ok"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()
        writer.close()
        return
    if target.startswith("/refuse"):
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
        return
    accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID)
                              .digest())
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    await writer.drain()
    if target.startswith("/flood"):
        total = int(target.partition("mb=")[2] or "1") * 1024 * 1024
        chunk = b"x" * 65536
        while sent < total:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
        writer.close()
        return
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = await asyncio.start_server(handle, "127.0.0.1", args.port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
