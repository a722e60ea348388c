"""The readiness schedule of one start, on a task.Clock: dense, then backing off, and at once
when the model prints a line. No real probes, no sleeps; and the HTTP probe itself, once,
against a loopback server."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Site

from llamaswap.health import (
    DENSE_INTERVAL,
    DENSE_PERIOD,
    MAX_INTERVAL,
    PROBE_TIMEOUT,
    HealthTimeout,
    ReadinessPoller,
    http_probe,
)


class Probes:
    """A probe that records when it was called; answers at once, or stays pending."""

    def __init__(self, clock: Clock, answer: bool | None = False) -> None:
        self.clock = clock
        self.answer = answer
        """True/False: answer at once; None: leave the probe in flight (see ``pending``)."""
        self.times: list[float] = []
        self.pending: list[Deferred[bool]] = []
        self.cancelled = 0

    def __call__(self, timeout: float) -> Deferred[bool]:
        self.times.append(self.clock.seconds())
        if self.answer is None:
            d: Deferred[bool] = Deferred(lambda _: self._count_cancel())
            self.pending.append(d)
            return d
        return succeed(self.answer)

    def _count_cancel(self) -> None:
        self.cancelled += 1

    @property
    def calls(self) -> int:
        return len(self.times)


def outcome(d: Deferred[None]) -> list:
    out: list = []
    d.addBoth(out.append)
    return out


def advance_by(clock: Clock, total: float, step: float = 0.001) -> None:
    for _ in range(round(total / step)):
        clock.advance(step)


def test_first_probe_is_immediate_then_one_every_5ms_for_the_first_second() -> None:
    clock = Clock()
    probes = Probes(clock)
    ReadinessPoller(clock, probes, timeout=30).start()
    assert probes.times == [0.0]
    clock.advance(DENSE_INTERVAL * 0.8)
    assert probes.calls == 1
    clock.advance(DENSE_INTERVAL * 0.2)
    assert probes.calls == 2
    advance_by(clock, DENSE_PERIOD - DENSE_INTERVAL)
    gaps = [b - a for a, b in zip(probes.times, probes.times[1:], strict=False)]
    assert gaps == pytest.approx([DENSE_INTERVAL] * len(gaps))
    assert probes.calls == pytest.approx(DENSE_PERIOD / DENSE_INTERVAL + 1, abs=1)


def test_after_the_dense_phase_the_interval_grows_by_half_up_to_250ms() -> None:
    clock = Clock()
    probes = Probes(clock)
    ReadinessPoller(clock, probes, timeout=30).start()
    advance_by(clock, DENSE_PERIOD)
    dense = probes.calls
    advance_by(clock, 3.0)
    gaps = [b - a for a, b in zip(probes.times[dense - 1:], probes.times[dense:], strict=False)]
    expected = [min(DENSE_INTERVAL * 1.5 ** n, MAX_INTERVAL) for n in range(1, len(gaps) + 1)]
    assert gaps == pytest.approx(expected, abs=0.0011)  # the clock moves in 1 ms steps
    assert gaps[-1] == pytest.approx(MAX_INTERVAL, abs=0.0011)
    # 3 s after the dense phase: ~11 probes growing to 250 ms, then 4 a second
    assert probes.calls - dense < 20


def test_a_line_of_output_probes_at_once_instead_of_at_the_next_timer() -> None:
    clock = Clock()
    probes = Probes(clock)
    poller = ReadinessPoller(clock, probes, timeout=30)
    result = outcome(poller.start())
    advance_by(clock, 5.0, step=0.01)  # long past the dense phase: 250 ms between probes
    (timer,) = clock.getDelayedCalls()
    clock.advance(timer.getTime() - clock.seconds() - 0.2)  # the next timer is 200 ms away
    calls, line_at = probes.calls, clock.seconds()
    probes.answer = True
    poller.output()  # the model prints "server is listening on ..."
    clock.advance(0)
    assert probes.calls == calls + 1 and probes.times[-1] == line_at
    assert result == [None]
    assert clock.getDelayedCalls() == []


def test_never_more_than_one_probe_in_flight_and_lines_meanwhile_ask_for_one_more() -> None:
    clock = Clock()
    probes = Probes(clock, answer=None)
    poller = ReadinessPoller(clock, probes, timeout=30)
    result = outcome(poller.start())
    assert probes.calls == 1
    clock.advance(0.5)  # no timer runs while a probe is in flight
    assert probes.calls == 1
    for _ in range(3):
        poller.output()  # three lines while the probe is in flight
        clock.advance(0.001)
    assert probes.calls == 1
    answered_at = clock.seconds()
    probes.pending[0].callback(False)
    clock.advance(0)
    assert probes.calls == 2  # exactly one more, right after the answer
    assert probes.times[1] == pytest.approx(answered_at)
    probes.pending[1].callback(False)
    clock.advance(0)
    assert probes.calls == 2  # the three lines asked for one probe, not three
    clock.advance(DENSE_INTERVAL)
    assert probes.calls == 3  # and the schedule goes on from there
    probes.pending[2].callback(True)
    assert result == [None]


def test_a_model_printing_without_pause_is_probed_no_more_densely_than_the_dense_phase() -> None:
    clock = Clock()
    probes = Probes(clock)
    poller = ReadinessPoller(clock, probes, timeout=30)
    poller.start()
    advance_by(clock, 10.0, step=0.01)
    before = probes.calls
    for _ in range(1000):  # a line every millisecond for a second
        poller.output()
        clock.advance(0.001)
    assert probes.calls - before <= 1.0 / DENSE_INTERVAL + 1
    assert probes.calls - before >= 0.5 / DENSE_INTERVAL  # but it is probed, densely


def test_health_timeout_at_the_deadline_and_no_probe_after_it() -> None:
    clock = Clock()
    probes = Probes(clock)
    result = outcome(ReadinessPoller(clock, probes, timeout=15).start())
    advance_by(clock, 14.99, step=0.01)
    assert result == []
    advance_by(clock, 0.02, step=0.01)
    assert len(result) == 1 and result[0].check(HealthTimeout)
    assert "timed out after 15s" in str(result[0].value)
    assert max(probes.times) <= 15.0
    assert clock.getDelayedCalls() == []


def test_progress_moves_the_deadline() -> None:
    clock = Clock()
    probes = Probes(clock)
    last_output = [0.0]
    result = outcome(ReadinessPoller(clock, probes, timeout=15,
                                     progress=lambda: last_output[0]).start())
    clock.advance(10)
    last_output[0] = 10.0
    advance_by(clock, 14.9, step=0.1)
    assert result == []
    advance_by(clock, 0.3, step=0.1)
    assert len(result) == 1 and result[0].check(HealthTimeout)


def test_a_probe_that_fails_or_hangs_means_not_yet() -> None:
    clock = Clock()
    answers: list[Deferred[bool]] = [fail(ConnectionRefusedError()), Deferred()]
    times: list[float] = []

    def probe(timeout: float) -> Deferred[bool]:
        times.append(clock.seconds())
        return answers.pop(0) if answers else succeed(True)

    result = outcome(ReadinessPoller(clock, probe, timeout=30).start())
    clock.advance(DENSE_INTERVAL)
    assert len(times) == 2 and result == []  # the refused one was followed by another
    clock.advance(PROBE_TIMEOUT)  # the hanging one times out...
    clock.advance(DENSE_INTERVAL)  # ...and the schedule goes on (past the dense phase now)
    clock.advance(MAX_INTERVAL)
    assert len(times) == 3 and result == [None]


def test_cancelling_cancels_the_probe_in_flight_and_the_timer_and_ignores_output() -> None:
    clock = Clock()
    probes = Probes(clock, answer=None)
    poller = ReadinessPoller(clock, probes, timeout=30)
    d = poller.start()
    result = outcome(d)
    d.cancel()
    assert len(result) == 1 and result[0].check(CancelledError)
    assert probes.cancelled == 1 and probes.pending[0].called
    poller.output()
    clock.advance(1)
    assert probes.calls == 1 and clock.getDelayedCalls() == []

    probes.answer = False  # cancelled between probes: the timer goes
    poller = ReadinessPoller(clock, probes, timeout=30)
    d = poller.start()
    assert len(clock.getDelayedCalls()) == 1
    d.addErrback(lambda f: f.trap(CancelledError))
    d.cancel()
    assert clock.getDelayedCalls() == []


class _Health(Resource):
    """A health endpoint on loopback: 503 until ``ready``."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.ready = False
        self.hits = 0

    def render_GET(self, request: Any) -> bytes:
        self.hits += 1
        request.setResponseCode(200 if self.ready else 503)
        return b"OK" if self.ready else b"loading"


@pytest_twisted.ensureDeferred
async def test_the_http_probe_is_healthy_only_on_200_and_refused_means_not_yet() -> None:
    health = _Health()
    port: Any = reactor.listenTCP(0, Site(health), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/health"
        probe = http_probe(reactor, url)
        assert await probe(2.0) is False
        health.ready = True
        assert await probe(2.0) is True
        assert health.hits == 2
    finally:
        await port.stopListening()
    assert await http_probe(reactor, url)(2.0) is False  # nothing listens there now
