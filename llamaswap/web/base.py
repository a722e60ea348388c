"""The pieces every endpoint module builds on: leaves, inner nodes, JSON and text answers.

Each endpoint is a small leaf resource. Asynchronous handlers run as coroutines started by
``Endpoint.render``; a client that disconnects cancels the coroutine, which withdraws its
place in the queue or stops the upstream request, wherever it was.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from llamaswap.context import context_of
from llamaswap.logs import get_logger
from llamaswap.web.errors import json_bytes, send_error

log = get_logger()

Handler = Callable[[Request], Coroutine[Any, Any, None] | None]
"""A ``handle_<METHOD>``: answers at once (``None``) or is ``async``."""
Routes = list[tuple[bytes, Resource]]
"""``(path, resource)`` pairs a module contributes to the tree (``mount`` puts them in)."""


class Node(Resource):
    """An inner node of the tree: unknown children get a JSON 404, not an HTML page."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NotFound()


class Endpoint(Resource):
    """A leaf answering ``handle_<METHOD>``; a path with extra segments is a 404."""

    isLeaf = True
    allow_subpaths = False

    def render(self, request: Request) -> bytes | int:
        if not self.allow_subpaths and request.postpath not in ([], [b""]):
            return NotFound().render(request)
        method = request.method.decode("ascii", "replace")
        handler = getattr(self, f"handle_{method}", None)
        if handler is None and method == "HEAD":
            handler = getattr(self, "handle_GET", None)
        if handler is None:
            allowed = sorted(n[len("handle_"):] for n in dir(self) if n.startswith("handle_"))
            send_error(request, 405, f"method {method} not allowed on this path",
                       headers={"allow": ", ".join(allowed)})
            return NOT_DONE_YET
        return run_async(request, handler)


def run_async(request: Request, handler: Handler) -> int:
    """Run ``handler`` as a coroutine; the client leaving cancels it; errors become 500s."""
    result = handler(request)
    if result is None:
        return NOT_DONE_YET
    d: Deferred[None] = Deferred.fromCoroutine(result)
    context_of(request).handler = d

    def client_gone(_: Failure) -> None:
        context_of(request).gone = True
        d.cancel()

    if not d.called:
        # Not for a handler that already answered (a 404, a 400): twisted.web would never
        # fire the notification, which would hold the request in a cycle with this closure.
        request.notifyFinish().addErrback(client_gone)
    d.addErrback(_unexpected, request)
    return NOT_DONE_YET


def _unexpected(failure: Failure, request: Request) -> None:
    if failure.check(CancelledError):
        return
    log.failure("error handling {method} {path}", failure,
                method=request.method.decode("ascii", "replace"),
                path=request.path.decode("latin-1"))
    send_error(request, 500, "internal error in llamaswap; see its log")


class NotFound(Endpoint):
    """A JSON 404 for any method and any path below it."""

    allow_subpaths = True

    def render(self, request: Request) -> int:
        send_error(request, 404, f"no such endpoint: {request.path.decode('latin-1')}")
        return NOT_DONE_YET


class Branch(Endpoint):
    """An endpoint that also has children (``/v1/messages`` has ``/count_tokens``)."""

    isLeaf = False

    def getChild(self, path: bytes, request: Request) -> Resource:
        """Itself for a trailing slash; an unknown child is a 404."""
        if path == b"" and not request.postpath:
            return self
        return NotFound()


def send_json(request: Request, value: object, status: int = 200) -> None:
    body = json_bytes(value)
    request.setResponseCode(status)
    request.setHeader("content-type", "application/json")
    request.setHeader("content-length", str(len(body)))
    request.write(body)
    request.finish()


def send_text(request: Request, text: str, status: int = 200) -> None:
    body = text.encode()
    request.setResponseCode(status)
    request.setHeader("content-type", "text/plain; charset=utf-8")
    request.setHeader("content-length", str(len(body)))
    request.write(body)
    request.finish()


def mount(root: Resource, path: bytes, leaf: Resource) -> None:
    """Put ``leaf`` at ``path``, creating JSON-404 inner nodes on the way."""
    *parents, last = path.strip(b"/").split(b"/")
    node = root
    for segment in parents:
        child = node.children.get(segment)
        if child is None:
            child = Node()
            node.putChild(segment, child)
        node = child
    node.putChild(last, leaf)


def mount_all(root: Resource, routes: Routes) -> None:
    for path, leaf in routes:
        mount(root, path, leaf)
