"""The decision loop with real ModelProcess objects on a fake process reactor and a Clock."""

from __future__ import annotations

import signal

import pytest
from fakes import FakeProcessReactor, ScriptedProbe, SignalLog, make_config, model
from twisted.internet.defer import Deferred

from llamaswap.config import Config
from llamaswap.policy import ModelState
from llamaswap.process import ModelProcess, StartError
from llamaswap.router import ConcurrencyLimitExceeded, ModelUnloaded, Router, ShuttingDown


class Harness:
    def __init__(self, config: Config) -> None:
        self.reactor = FakeProcessReactor()
        self.signals = SignalLog()
        self.probes = {m: ScriptedProbe() for m in config.models}
        self.processes = {
            m: ModelProcess(cfg, self.reactor, health_timeout=60, probe=self.probes[m],
                            signal_group=self.signals)
            for m, cfg in config.models.items()}
        self.router = Router(config, self.processes, self.reactor)

    def spawned(self, model_id: str) -> list:
        return [p for p in self.reactor.processes if p.model_argv[-1:] == [model_id]]

    def become_healthy(self, model_id: str) -> None:
        self.probes[model_id].healthy = True
        self.reactor.advance(0.3)

    def exit(self, model_id: str, code: int = 0) -> None:
        self.spawned(model_id)[-1].exit(code)

    def state(self, model_id: str) -> ModelState:
        return self.processes[model_id].state


def outcome(d: Deferred) -> list:
    out: list = []
    d.addBoth(out.append)
    return out


def two_models(**overrides: object) -> Harness:
    return Harness(make_config(model("a", **overrides), model("b", **overrides)))


def test_cold_request_starts_the_model_and_is_granted_when_ready() -> None:
    h = two_models()
    got = outcome(h.router.acquire("a"))
    assert h.state("a") is ModelState.STARTING and got == []
    h.become_healthy("a")
    assert got[0].model == "a" and h.router.in_flight("a") == 1


def test_several_cold_requests_cause_one_spawn() -> None:
    h = two_models()
    results = [outcome(h.router.acquire("a")) for _ in range(5)]
    h.become_healthy("a")
    assert len(h.spawned("a")) == 1
    assert all(r and r[0].model == "a" for r in results)


def test_swap_waits_for_in_flight_requests_then_stops_a_before_starting_b() -> None:
    h = two_models()
    lease_a = outcome(h.router.acquire("a"))
    h.become_healthy("a")
    got_b = outcome(h.router.acquire("b"))
    assert h.signals.sent == [] and h.spawned("b") == []  # a is busy: nothing cut off
    lease_a[0].release()
    assert h.signals.sent == [(h.processes["a"].pid, signal.SIGTERM)]
    assert h.spawned("b") == []  # b starts only after a has exited
    h.exit("a")
    assert len(h.spawned("b")) == 1
    h.become_healthy("b")
    assert got_b[0].model == "b"
    assert h.state("a") is ModelState.STOPPED


def test_requests_for_two_swap_members_arriving_together_never_run_both() -> None:
    h = two_models()
    ga, gb = outcome(h.router.acquire("a")), outcome(h.router.acquire("b"))
    assert h.spawned("b") == []
    h.become_healthy("a")
    ga[0].release()
    h.exit("a")
    h.become_healthy("b")
    assert gb[0].model == "b" and h.state("a") is ModelState.STOPPED


def test_over_the_concurrency_limit_is_refused_at_once() -> None:
    h = two_models(concurrency_limit=2)
    first, second = h.router.acquire("a"), h.router.acquire("a")
    third = outcome(h.router.acquire("a"))
    assert third[0].check(ConcurrencyLimitExceeded)
    first.cancel()
    first.addErrback(lambda f: None)
    assert outcome(h.router.acquire("a")) == []  # a slot came back
    second.addErrback(lambda f: None)


def test_cancelled_waiter_leaves_and_the_start_goes_on_for_others() -> None:
    h = two_models()
    leaving, staying = h.router.acquire("a"), outcome(h.router.acquire("a"))
    leaving.addErrback(lambda f: None)
    leaving.cancel()
    h.become_healthy("a")
    assert staying[0].model == "a" and h.router.in_flight("a") == 1


def test_start_failure_reaches_every_waiter_and_leaves_the_model_stopped() -> None:
    h = two_models()
    results = [outcome(h.router.acquire("a")) for _ in range(3)]
    h.exit("a", 1)
    assert all(r[0].check(StartError) for r in results)
    assert h.state("a") is ModelState.STOPPED
    assert outcome(h.router.acquire("a")) == [] and len(h.spawned("a")) == 2  # retried


def test_ttl_counts_from_the_end_of_the_last_request() -> None:
    h = Harness(make_config(model("a", ttl=60)))
    lease = outcome(h.router.acquire("a"))
    h.become_healthy("a")
    h.reactor.advance(120)  # in flight for longer than the TTL: never unloaded
    assert h.signals.sent == []
    lease[0].release()
    h.reactor.advance(59)
    again = outcome(h.router.acquire("a"))  # a request re-arms the timer
    again[0].release()
    h.reactor.advance(59)
    assert h.signals.sent == []
    h.reactor.advance(2)
    assert h.signals.sent == [(h.processes["a"].pid, signal.SIGTERM)]


def test_request_arriving_during_ttl_unload_restarts_the_model() -> None:
    h = Harness(make_config(model("a", ttl=10)))
    lease = outcome(h.router.acquire("a"))
    h.become_healthy("a")
    lease[0].release()
    h.reactor.advance(11)
    assert h.state("a") is ModelState.STOPPING
    got = outcome(h.router.acquire("a"))
    h.exit("a")
    assert len(h.spawned("a")) == 2
    h.become_healthy("a")
    assert got[0].model == "a"


def test_crash_while_idle_then_next_request_restarts() -> None:
    h = two_models()
    lease = outcome(h.router.acquire("a"))
    h.become_healthy("a")
    lease[0].release()
    h.exit("a", 3)
    assert h.state("a") is ModelState.STOPPED
    outcome(h.router.acquire("a"))
    assert len(h.spawned("a")) == 2


def test_unload_fails_waiters_and_stops_models() -> None:
    h = two_models()
    waiting = outcome(h.router.acquire("a"))
    done = outcome(h.router.unload())
    assert waiting[0].check(ModelUnloaded)
    h.exit("a")
    assert done == [None] and h.state("a") is ModelState.STOPPED


def test_shutdown_drains_in_flight_then_stops_and_refuses_new_work() -> None:
    h = two_models()
    lease = outcome(h.router.acquire("a"))
    h.become_healthy("a")
    done = outcome(Deferred.fromCoroutine(h.router.shutdown(drain_timeout=5)))
    assert outcome(h.router.acquire("b"))[0].check(ShuttingDown)
    assert h.signals.sent == []  # still draining
    lease[0].release()
    assert h.signals.sent == [(h.processes["a"].pid, signal.SIGTERM)]
    h.exit("a")
    assert done == [None]


def test_shutdown_drain_is_bounded() -> None:
    h = two_models()
    outcome(h.router.acquire("a"))
    h.become_healthy("a")
    outcome(Deferred.fromCoroutine(h.router.shutdown(drain_timeout=5)))
    h.reactor.advance(4)
    assert h.signals.sent == []
    h.reactor.advance(2)
    assert h.signals.sent and h.signals.sent[0][1] == signal.SIGTERM


@pytest.mark.parametrize("order", [("a", "b", "a"), ("b", "a", "b")])
def test_alternating_requests_all_get_answers(order: tuple[str, ...]) -> None:
    h = two_models()
    results = [outcome(h.router.acquire(m)) for m in order]
    for _ in range(6):
        for m in ("a", "b"):
            if h.state(m) is ModelState.STARTING:
                h.become_healthy(m)
        for r in results:
            if r and not isinstance(r[0], Exception) and hasattr(r[0], "release"):
                r[0].release()
        for m in ("a", "b"):
            if h.state(m) is ModelState.STOPPING:
                h.exit(m)
    assert all(r and r[0].model == m for r, m in zip(results, order, strict=True))
