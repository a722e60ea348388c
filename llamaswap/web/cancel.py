"""Ending a request in flight on an operator's word (``POST /api/inflight/<id>/cancel``).

The request's handler coroutine is cancelled, as when its client leaves: the upstream
request is closed and the model's place released. Unlike a client that left, this client is
still there, so it is told, in the clearest way its response still allows:

- nothing sent yet: a ``503`` JSON error (code ``request_cancelled``);
- an event stream under way: one ``error`` event, then the stream ends normally;
- any other body under way: the connection is cut, so the client cannot take a short body
  for a whole one.
"""

from __future__ import annotations

import json

from twisted.web.server import Request

from llamaswap.context import context_of
from llamaswap.exchange import CANCELLED
from llamaswap.web.errors import abort_connection, send_error


def end_cancelled(request: Request) -> None:
    context = context_of(request)
    handler = context.handler
    answered = (request.finished or context.gone
                or getattr(request, "_disconnected", False))
    if not answered and not request.startedWriting:
        # Answer first: cancelling the handler closes the upstream connection, and the
        # handler's own error path would otherwise answer the closed connection (a 502).
        send_error(request, 503, CANCELLED, code="request_cancelled")
        answered = True
    if handler is not None and not handler.called:
        handler.cancel()
    if answered or request.finished:
        return
    if request.producer is not None:
        request.unregisterProducer()
    content_type = request.responseHeaders.getRawHeaders(b"content-type", [b""])[0]
    if content_type.lower().startswith(b"text/event-stream"):
        error = {"error": {"message": CANCELLED, "type": "server_error",
                           "code": "request_cancelled"}}
        request.write(b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n")
        request.finish()
        return
    abort_connection(request)
