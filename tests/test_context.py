"""The per-request context: one typed record per request, stored without inventing
attributes on twisted's Request."""

from __future__ import annotations

from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel
from zope.interface import Interface

from llamaswap.context import ContextHolder, IRequestContext, RequestContext, context_of


class IOther(Interface):
    """An embedding application's own component."""


def test_a_plain_request_keeps_its_context_as_a_component() -> None:
    request = Request(DummyChannel())
    theirs = object()
    request.setComponent(IOther, theirs)
    attributes = set(vars(request))
    context = context_of(request)
    context.model = "m"
    assert context_of(request) is context and context_of(request).model == "m"
    assert request.getComponent(IRequestContext) is context
    assert request.getComponent(IOther) is theirs
    assert set(vars(request)) == attributes  # nothing set on twisted's object


def test_llamaswaps_own_request_class_holds_it_as_an_attribute() -> None:
    class Own(ContextHolder, Request):
        pass

    first, second = Own(DummyChannel()), Own(DummyChannel())
    context = context_of(first)
    assert isinstance(context, RequestContext) and first.request_context is context
    assert context_of(first) is context
    assert context_of(second) is not context  # one per request, never shared
    assert first.getComponent(IRequestContext) is None
