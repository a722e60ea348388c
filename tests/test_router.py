"""The decision loop with real ModelProcess objects on a fake process reactor and a Clock."""

from __future__ import annotations

import signal

import pytest
from fakes import FakeProcessReactor, ScriptedProbe, SignalLog, make_config, model
from twisted.internet.defer import Deferred

from llamaswap.config import Config, ModelConfig
from llamaswap.policy import ModelState
from llamaswap.process import KILL_FAMILY, ModelProcess, StartError
from llamaswap.router import (
    CircuitOpen,
    ConcurrencyLimitExceeded,
    ModelUnloaded,
    QueueTimeout,
    Rejected,
    Router,
    ShuttingDown,
    WaitFailed,
)
from llamaswap.routing import SchedulerConfig


class Harness:
    def __init__(self, config: Config) -> None:
        self.reactor = FakeProcessReactor()
        self.signals = SignalLog()
        self.probes = {m: ScriptedProbe() for m in config.models}
        self.processes = {
            m: ModelProcess(cfg, self.reactor, health_timeout=60, probe=self.probes[m],
                            signal_group=self.signals, signal_keeper=self.signals)
            for m, cfg in config.models.items()}
        self.router = Router(config, self.processes, self.reactor)

    def spawned(self, model_id: str) -> list:
        return [p for p in self.reactor.processes if p.model_argv[-1:] == [model_id]]

    def become_healthy(self, model_id: str) -> None:
        self.probes[model_id].healthy = True
        self.reactor.advance(0.3)

    def exit(self, model_id: str, code: int = 0, signal: int | None = None) -> None:
        self.spawned(model_id)[-1].exit(code, signal)

    def state(self, model_id: str) -> ModelState:
        return self.processes[model_id].state


def outcome(d: Deferred) -> list:
    out: list = []
    d.addBoth(out.append)
    return out


def fifo(*models: ModelConfig) -> Config:
    """llama-swap's scheduler: these tests pin down its mechanics."""
    return make_config(*models, scheduler=SchedulerConfig.fifo())


def two_models(**overrides: object) -> Harness:
    return Harness(fifo(model("a", **overrides), model("b", **overrides)))


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
    assert outcome(h.router.acquire("a")) == []
    assert len(h.spawned("a")) == 1  # backing off (1 s after the first failure)...
    h.reactor.advance(1.0)
    assert len(h.spawned("a")) == 2  # ...then the next request tries again


def test_ttl_counts_from_the_end_of_the_last_request() -> None:
    h = Harness(fifo(model("a", ttl=60)))
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
    h = Harness(fifo(model("a", ttl=10)))
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
    h.reactor.advance(1.0)  # a crash counts as a failure: one backoff step
    assert len(h.spawned("a")) == 2


def test_a_model_that_served_then_crashed_is_started_again_not_granted() -> None:
    """The router's shortcut remembers that a ready model may be granted at once; a state
    change must make it forget, or the next request would be leased a dead process."""
    h = two_models()
    h.processes["a"].ensure_ready()  # started without the router's help (as a preload)
    h.become_healthy("a")
    first = outcome(h.router.acquire("a"))  # granted at once, through the shortcut
    assert first and first[0].model == "a"
    first[0].release()
    h.exit("a", 3)
    third = outcome(h.router.acquire("a"))
    assert third == []
    h.reactor.advance(1.0)  # the crash counts as a failure: one backoff step
    assert len(h.spawned("a")) == 2
    h.become_healthy("a")
    assert third and third[0].model == "a"


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


# -- swap-aware scheduling, limits and learning -------------------------------------------------

def aware(*models: ModelConfig, **settings: object) -> Harness:
    return Harness(make_config(*models, scheduler=SchedulerConfig(**settings)))  # type: ignore[arg-type]


def test_hold_keeps_a_resident_then_the_wake_timer_swaps_without_another_event() -> None:
    # (and a burst's model, whose clients never came back, is not held: see test_policy)
    h = aware(model("a"), model("b"), hold_time=2.0)
    lease = outcome(h.router.acquire("a"))
    h.reactor.advance(5)  # a takes 5 s to load: holding it 2 s is worth it
    h.become_healthy("a")
    lease[0].release()
    h.reactor.advance(0.5)
    outcome(h.router.acquire("a"))[0].release()  # its client came back: a is worth holding
    waiting = outcome(h.router.acquire("b"))
    h.reactor.advance(1.5)
    assert h.signals.sent == []  # a is held
    again = outcome(h.router.acquire("a"))  # the agent comes back within the hold
    assert again[0].model == "a"
    again[0].release()
    h.reactor.advance(2.1)  # no event at all: the planned wake-up starts the swap
    assert h.signals.sent == [(h.processes["a"].pid, signal.SIGTERM)]
    h.exit("a")
    h.become_healthy("b")
    assert waiting[0].model == "b"


def test_queue_timeout_fails_the_waiter_with_a_retry_hint() -> None:
    h = aware(model("a"), model("b"), queue_timeout=30.0)
    lease = outcome(h.router.acquire("a"))
    h.become_healthy("a")
    waiting = outcome(h.router.acquire("b"))
    h.reactor.advance(31)
    failure = waiting[0]
    assert failure.check(QueueTimeout)
    assert failure.value.code == "queue_timeout" and failure.value.retry_after >= 1
    lease[0].release()
    assert h.router.queued() == 0


def test_per_model_queue_bound_answers_queue_full() -> None:
    h = Harness(make_config(model("a"), model("b", max_queue=1),
                            scheduler=SchedulerConfig.fifo()))
    lease = outcome(h.router.acquire("a"))
    h.become_healthy("a")
    outcome(h.router.acquire("b"))
    refused = outcome(h.router.acquire("b"))
    assert refused[0].check(Rejected) and refused[0].value.code == "queue_full"
    lease[0].release()


def test_load_and_unload_times_are_learnt_and_feed_the_eta() -> None:
    h = two_models()
    lease = outcome(h.router.acquire("a"))
    h.reactor.advance(3.0)
    h.become_healthy("a")  # +0.3 s
    assert h.router.costs["a"].load == pytest.approx(3.3, abs=0.05)
    ticket = h.router.enqueue("b")
    assert ticket.position() == 1
    lease[0].release()
    h.reactor.advance(0.5)
    h.exit("a")
    assert h.router.costs["a"].unload == pytest.approx(0.5, abs=0.05)
    assert ticket.position() == 0  # now loading
    h.become_healthy("b")
    outcome(ticket.deferred)[0].release()
    lease_a = h.router.enqueue("a")
    # unloading b (unknown yet, 0) plus a's learnt 3.3 s load
    assert lease_a.eta() == pytest.approx(3.3, abs=0.1)


def test_a_freshly_loaded_model_serves_its_own_request_before_any_eviction() -> None:
    h = two_models()
    first = outcome(h.router.acquire("a"))
    second = outcome(h.router.acquire("b"))  # queued behind a's load
    h.become_healthy("a")
    assert first[0].model == "a"  # granted before b's swap could evict a
    assert h.signals.sent == [] and second == []
    first[0].release()
    assert h.signals.sent == [(h.processes["a"].pid, signal.SIGTERM)]


@pytest.mark.parametrize("abandon", [False, True])
def test_a_load_nobody_waits_for_is_abandoned_only_if_configured(abandon: bool) -> None:
    h = aware(model("a"), abandon_unneeded_loads=abandon)
    waiting = h.router.acquire("a")
    waiting.addErrback(lambda f: None)
    waiting.cancel()
    stopped = (h.processes["a"].pid, signal.SIGTERM) in h.signals.sent
    assert stopped is abandon


def test_unplaceable_model_fails_with_a_clear_reason() -> None:
    from dataclasses import replace

    from llamaswap.config import GroupConfig
    config = replace(make_config(model("p", resources={"vram": 20}),
                                 model("big", resources={"vram": 10}),
                                 groups=[GroupConfig("P", ("p",), persistent=True)]),
                     capacities={"vram": 24.0})
    h = Harness(config)
    lease = outcome(h.router.acquire("p"))
    h.become_healthy("p")
    failed = outcome(h.router.acquire("big"))
    assert failed[0].check(WaitFailed) and failed[0].value.code == "model_does_not_fit"
    lease[0].release()


# -- supervision -------------------------------------------------------------------------------

def supervised(**settings: object) -> Harness:
    from dataclasses import replace

    from llamaswap.supervision import SupervisionConfig
    sup = SupervisionConfig(**settings)  # type: ignore[arg-type]
    return Harness(fifo(replace(model("a"), supervision=sup), replace(model("b"),
                                                                      supervision=sup)))


def test_restarts_back_off_exponentially() -> None:
    h = supervised(backoff=1.0, max_backoff=60.0, max_failures=10)
    outcome(h.router.acquire("a"))
    h.exit("a", 1)  # first failure
    outcome(h.router.acquire("a"))
    h.reactor.advance(0.9)
    assert len(h.spawned("a")) == 1
    h.reactor.advance(0.2)
    assert len(h.spawned("a")) == 2
    h.exit("a", 1)  # second failure: 2 s
    outcome(h.router.acquire("a"))
    h.reactor.advance(1.9)
    assert len(h.spawned("a")) == 2
    h.reactor.advance(0.2)
    assert len(h.spawned("a")) == 3


def test_circuit_opens_after_max_failures_and_closes_after_the_window_or_an_unload() -> None:
    h = supervised(backoff=0.0, max_failures=2, failure_window=60.0)
    first = outcome(h.router.acquire("a"))
    h.exit("a", 1)
    second = outcome(h.router.acquire("a"))
    h.reactor.advance(0.01)
    h.exit("a", 1)
    assert first[0].check(StartError) and second[0].check(StartError)
    refused = outcome(h.router.acquire("a"))
    assert refused[0].check(CircuitOpen)
    assert refused[0].value.code == "model_failing" and refused[0].value.retry_after > 50
    assert "exit status 1" in str(refused[0].value)  # the last error, for the operator
    assert h.router.circuit_open("a") and not h.router.circuit_open("b")  # shown in the UI
    h.reactor.advance(61)
    assert not h.router.circuit_open("a")
    assert outcome(h.router.acquire("a")) == []  # the window passed: a new attempt
    h.exit("a", 1)
    h.reactor.advance(0.01)
    outcome(h.router.acquire("a"))
    h.exit("a", 1)
    assert outcome(h.router.acquire("a"))[0].check(CircuitOpen)
    outcome(h.router.unload(["a"]))
    assert outcome(h.router.acquire("a")) == []  # the operator's unload closed it


def test_a_model_silent_with_requests_in_flight_is_declared_hung_and_killed() -> None:
    h = supervised(hang_timeout=5.0)
    lease = outcome(h.router.acquire("a"))
    h.become_healthy("a")
    pid = h.processes["a"].pid
    h.reactor.advance(4)
    lease[0].touch()  # a token arrived
    h.reactor.advance(4)
    assert h.signals.sent == []
    h.reactor.advance(1.1)
    assert (pid, KILL_FAMILY) in h.signals.sent
    assert lease[0].hung and h.router.hangs["a"] == 1
    h.exit("a", signal=9)
    lease[0].release()
    assert h.state("a") is ModelState.STOPPED


def test_no_hang_timer_while_idle() -> None:
    h = supervised(hang_timeout=5.0)
    lease = outcome(h.router.acquire("a"))
    h.become_healthy("a")
    lease[0].release()
    h.reactor.advance(60)
    assert h.signals.sent == []


def test_liveness_probe_kills_an_idle_model_that_stops_answering() -> None:
    h = supervised(liveness_interval=10.0)
    lease = outcome(h.router.acquire("a"))
    h.become_healthy("a")
    lease[0].release()
    h.reactor.advance(10.1)
    assert h.signals.sent == []  # healthy
    h.probes["a"].healthy = False
    h.reactor.advance(10.1)
    assert h.signals.sent == []  # one miss is tolerated
    h.reactor.advance(10.1)
    assert (h.processes["a"].pid, KILL_FAMILY) in h.signals.sent


def test_stop_listeners_hear_why_each_model_is_stopped() -> None:
    h = Harness(fifo(model("a", ttl=5), model("b")))
    reasons: list[tuple[str, str]] = []
    h.router.on_stop(lambda m, why: reasons.append((m, why)))
    lease = outcome(h.router.acquire("a"))
    h.become_healthy("a")
    lease[0].release()
    h.reactor.advance(6)  # TTL
    h.exit("a")
    lease = outcome(h.router.acquire("a"))
    h.become_healthy("a")
    lease[0].release()
    outcome(h.router.acquire("b"))  # evicts a
    h.exit("a")
    h.become_healthy("b")
    outcome(h.router.unload(["b"]))
    assert reasons == [("a", "ttl"), ("a", "request"), ("b", "manual")]
