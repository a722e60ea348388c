"""What llamaswap learns about one HTTP request while serving it, as one typed record.

The resource tree writes it (how deep llamaswap is mounted, whose error shape applies, the
model asked for, the API key's limits, whether the client left); the access log and
observability read it when the request ends.

llamaswap's own request class (``service.AccessLoggedRequest``) declares it as an attribute
(``ContextHolder``): a lookup per step then costs an attribute read. Any other
``twisted.web.server.Request`` (an application's own ``Site``) keeps it as a component
(``Request`` is ``Componentized``, the mechanism twisted.web uses for sessions), so no
attribute of twisted's object is invented and an application's own components are left
alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.components import Componentized
from zope.interface import Interface, implementer


class IRequestContext(Interface):
    """The key under which a request's ``RequestContext`` is stored."""


@implementer(IRequestContext)
@dataclass(slots=True, eq=False)
class RequestContext:
    """llamaswap's per-request state; every field has a neutral default."""

    depth: int = 0
    """Path segments above llamaswap's root (1 when an application mounts it at ``/llm/``):
    paths forwarded upstream and recorded in metrics are taken below it."""
    api: str = "openai"
    """Whose error envelope llamaswap's own errors take: ``openai`` or ``anthropic``."""
    model: str | None = None
    """The model the request named, then the one serving it: access log, metrics, activity."""
    allowed_models: frozenset[str] | None = None
    """The only models the request's API key may use (``apiKeys[].models``); None: any."""
    gone: bool = False
    """The client disconnected: nothing more may be written to the request."""
    stream_started: bool = False
    """A keep-alive event stream (``web/waiting.py``) already sent status and headers."""
    relayed: bool = False
    """The request reached its model; observability records it from the relayed exchange."""
    watch: Any = None
    """What follows the relayed answer (``Forwarder.watch``'s result, an
    ``exchange.Exchange``): one per client request, also when it is sent again."""
    upstream_path: str | None = None
    """Below ``/upstream/<model>``: the path the model's server is sent (what activity and
    in-flight entries show, as llama-swap)."""
    request_id: int | None = None
    """The access log's number for the request (``id=`` in its line)."""
    started: float | None = None
    """``time.monotonic()`` when twisted.web began processing the request."""
    handler: Deferred[None] | None = None
    """The coroutine serving the request (``web/base.run_async``): cancelling it ends the
    request's work, as a client that leaves does (``web/cancel.py``)."""


class ContextHolder:
    """Mixed into a request class of llamaswap's own: the context as a declared attribute."""

    request_context: RequestContext | None = None


def context_of(request: Componentized) -> RequestContext:
    """The request's context, created empty on first use."""
    if isinstance(request, ContextHolder):
        held = request.request_context
        if held is None:
            held = request.request_context = RequestContext()
        return held
    # A component lookup costs a few hundred nanoseconds (a miss, through zope's adapter
    # hooks, microseconds): callers look it up once per step and pass the context on.
    found = request.getComponent(IRequestContext)
    if isinstance(found, RequestContext):
        return found
    context = RequestContext()
    request.setComponent(IRequestContext, context)
    return context
