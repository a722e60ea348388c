"""Why models start and stop, as the events report it (``llamaswap.reasons``): a real
Router and real ModelProcess objects on a fake process reactor and a Clock."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fakes import FakeProcessReactor, ScriptedProbe, SignalLog, make_config, model
from twisted.internet.defer import Deferred

from llamaswap.config import Config, GroupConfig
from llamaswap.policy import ModelState, eviction_cause
from llamaswap.process import ModelProcess
from llamaswap.reasons import StateReasons
from llamaswap.router import Router
from llamaswap.routing import SchedulerConfig


class Harness:
    """A router with ``StateReasons`` wired as ``Observability`` wires it; ``seen`` holds
    each model's fields as a ``modelStatus`` event published at each change carries them."""

    def __init__(self, config: Config) -> None:
        self.reactor = FakeProcessReactor()
        signals = SignalLog()
        self.probes = {m: ScriptedProbe() for m in config.models}
        self.processes = {
            m: ModelProcess(cfg, self.reactor, health_timeout=60, probe=self.probes[m],
                            signal_group=signals, signal_keeper=signals)
            for m, cfg in config.models.items()}
        self.router = Router(config, self.processes, self.reactor)
        self.reasons = StateReasons(config)
        self.router.on_swap(self.reasons.swap_started)
        self.router.on_stop(self.reasons.stopping)
        self.seen: list[tuple[str, str, dict[str, Any]]] = []
        for process in self.processes.values():
            process.add_observer(self._changed)

    def _changed(self, process: ModelProcess, old: ModelState, new: ModelState) -> None:
        self.reasons.state_changed(process, old, new)
        model_id = process.model.id
        self.seen.append((model_id, new.value, self.reasons.fields(model_id)))

    def at(self, model_id: str, state: str) -> dict[str, Any]:
        """The fields published when ``model_id`` last entered ``state``."""
        return [f for m, s, f in self.seen if m == model_id and s == state][-1]

    def serve(self, model_id: str) -> Any:
        """A request for ``model_id``, once its model is ready; returns its lease."""
        got: list[Any] = []
        self.router.acquire(model_id).addCallback(got.append)
        self.healthy(model_id)
        assert got, f"{model_id} was not granted"
        return got[0]

    def healthy(self, model_id: str) -> None:
        self.probes[model_id].healthy = True
        self.reactor.advance(0.3)

    def exit(self, model_id: str, code: int = 0) -> None:
        spawned = [p for p in self.reactor.processes if p.model_argv[-1:] == [model_id]]
        spawned[-1].exit(code)


def fifo(*models: Any, **overrides: Any) -> Config:
    return make_config(*models, scheduler=SchedulerConfig.fifo(), **overrides)


def test_a_swap_names_the_request_the_victim_and_the_group() -> None:
    h = Harness(fifo(model("a"), model("b")))
    h.serve("a").release()
    assert h.at("a", "starting")["swapReason"] == "a request for a"
    assert h.at("a", "starting")["stopReason"] is None
    h.router.acquire("b")
    stopping = h.at("a", "stopping")
    assert stopping["stopReason"] == "swapped out for b (same swap group)"
    assert stopping["stopCause"] == "swap"
    h.exit("a")
    starting = h.at("b", "starting")
    assert starting["swapReason"] == "a request for b evicted a (same swap group)"
    assert h.at("a", "stopped")["stopCause"] == "swap"  # still why it is stopped
    assert h.at("a", "stopped")["swapReason"] is None  # it is not loaded for anyone now


def test_an_exclusive_group_and_a_resource_budget_are_named() -> None:
    groups = [GroupConfig("A", ("a",), exclusive=False), GroupConfig("B", ("b",)),
              GroupConfig("C", ("c",), exclusive=False)]
    config = replace(fifo(model("a", resources={"vram": 10}), model("b"),
                          model("c", resources={"vram": 20}), groups=groups),
                     capacities={"vram": 24.0})
    assert eviction_cause(config, "b", "a") == "exclusive"
    assert eviction_cause(config, "c", "a") == "resources"
    h = Harness(config)
    h.serve("a").release()
    lease: list[Any] = []
    h.router.acquire("c").addCallback(lease.append)
    assert h.at("a", "stopping")["stopReason"] == "swapped out for c (resource budget)"
    h.exit("a")
    assert h.at("c", "starting")["swapReason"] == "a request for c evicted a (resource budget)"
    h.healthy("c")
    lease[0].release()
    h.router.acquire("b")
    assert h.at("c", "stopping")["stopReason"] == "swapped out for b (b's group is exclusive)"


def test_ttl_unload_and_shutdown_are_told_apart() -> None:
    h = Harness(fifo(model("a", ttl=5), model("b"), groups=[
        GroupConfig("A", ("a",), exclusive=False), GroupConfig("B", ("b",), exclusive=False)]))
    h.serve("a").release()
    h.serve("b").release()
    h.reactor.advance(6)
    assert h.at("a", "stopping")["stopCause"] == "ttl"
    assert h.at("a", "stopping")["stopReason"] == "idle for its ttl of 5 s: unloaded"
    h.exit("a")
    h.router.unload(["b"])
    assert h.at("b", "stopping")["stopCause"] == "unload"
    assert h.at("b", "stopping")["stopReason"] == "unloaded through the unload API"
    h.exit("b")
    h.serve("a").release()
    assert h.at("a", "ready")["stopReason"] is None  # starting again forgot the last stop
    closed = Deferred.fromCoroutine(h.router.shutdown(drain_timeout=1))
    assert h.at("a", "stopping")["stopCause"] == "shutdown"
    h.exit("a")
    h.reactor.advance(1)
    assert closed.called


def test_a_crash_and_a_failed_start_are_reported_without_the_routers_word() -> None:
    h = Harness(fifo(model("a")))
    h.serve("a").release()
    h.exit("a", 3)
    stopped = h.at("a", "stopped")
    assert stopped["stopCause"] == "crash"
    reason = stopped["stopReason"]
    assert reason.startswith("exited unexpectedly") and "3" in reason
    assert reason.count("exited unexpectedly") == 1, reason  # not said twice
    assert h.processes["a"].last_error in reason

    fresh = Harness(fifo(model("b")))
    failed: list[Any] = []
    fresh.router.acquire("b").addErrback(failed.append)
    fresh.exit("b", 4)
    assert failed
    stopped = fresh.at("b", "stopped")
    assert stopped["stopCause"] == "start_failed"
    assert stopped["stopReason"] == f"failed to start: {fresh.processes['b'].last_error}"
