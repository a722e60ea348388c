"""``GET /api/queue`` over a real Router on a fake clock (``llamaswap.web.queue``)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from fakes import FakeProcessReactor, ScriptedProbe, SignalLog, make_config, model
from twisted.web.test.requesthelper import DummyRequest

from llamaswap.process import ModelProcess
from llamaswap.router import Router
from llamaswap.routing import SchedulerConfig
from llamaswap.web.queue import Queue


class Swapper:
    """A router with models ``a`` and ``b`` (one runs at a time) and the endpoint on it."""

    def __init__(self) -> None:
        config = make_config(model("a"), model("b"), scheduler=SchedulerConfig.fifo(),
                             health_check_timeout=60)
        self.reactor = FakeProcessReactor()
        self.probes = {m: ScriptedProbe() for m in config.models}
        signals = SignalLog()
        self.processes = {
            m: ModelProcess(cfg, self.reactor, health_timeout=60, probe=self.probes[m],
                            signal_group=signals, signal_keeper=signals)
            for m, cfg in config.models.items()}
        self.router = Router(config, self.processes, self.reactor)
        app: Any = SimpleNamespace(router=self.router, reactor=self.reactor)
        self.endpoint = Queue(app)

    def healthy(self, model_id: str) -> None:
        self.probes[model_id].healthy = True
        self.reactor.advance(0.3)

    def get(self) -> Any:
        request: Any = DummyRequest([b""])
        request.method = b"GET"
        self.endpoint.render(request)
        assert request.finished and request.responseCode in (None, 200)
        assert request.responseHeaders.getRawHeaders(b"content-type") == [b"application/json"]
        return json.loads(b"".join(request.written))


def test_nothing_waiting_is_an_empty_list() -> None:
    assert Swapper().get() == {"requests": []}


def test_queued_requests_show_position_model_path_wait_and_eta() -> None:
    s = Swapper()
    held: list[Any] = []
    s.router.acquire("a").addCallback(held.append)
    s.healthy("a")
    assert held  # "a" is busy: requests for "b" queue behind it
    s.router.enqueue("b", path="/v1/chat/completions", access_id=7)
    s.reactor.advance(2.5)
    s.router.enqueue("b", path="/v1/completions", access_id=8)
    s.reactor.advance(0.5)
    # Nothing learnt yet: one load is estimated at a tenth of the health timeout (6 s).
    assert s.get()["requests"] == [
        {"position": 1, "id": 7, "model": "b", "req_path": "/v1/chat/completions",
         "waited_ms": 3000, "eta_ms": 6000},
        {"position": 2, "id": 8, "model": "b", "req_path": "/v1/completions",
         "waited_ms": 500, "eta_ms": 6000},
    ]


def test_a_request_whose_model_loads_has_position_zero_and_leaves_once_granted() -> None:
    s = Swapper()
    granted: list[Any] = []
    s.router.acquire("a").addCallback(granted.append)
    s.reactor.advance(1.0)
    (row,) = s.get()["requests"]
    assert row["position"] == 0 and row["model"] == "a" and row["waited_ms"] == 1000
    assert row["id"] is None and row["req_path"] == ""  # enqueued without labels
    s.healthy("a")
    assert granted and s.get() == {"requests": []}


def test_a_withdrawn_request_is_gone() -> None:
    s = Swapper()
    s.router.acquire("a")
    s.healthy("a")
    ticket = s.router.enqueue("b")
    assert len(s.get()["requests"]) == 1
    withdrawn: list[Any] = []
    ticket.deferred.addErrback(withdrawn.append)
    ticket.deferred.cancel()
    assert withdrawn and s.get() == {"requests": []}
