"""Readiness polling: probe densely while a start is young, at once when the model speaks.

llama-swap sleeps 250 ms and then polls every second; a model that is ready after 80 ms is
made to wait 250 ms for nothing. Here, for one start:

- the first probe goes out at once;
- for the first ``DENSE_PERIOD`` (1 s) the next probe follows ``DENSE_INTERVAL`` (5 ms)
  after the previous one answered, so a model that is ready early is seen within ~5 ms;
- after that the interval grows ×1.5 per probe up to ``MAX_INTERVAL`` (250 ms), so a model
  that loads for minutes costs four probes a second;
- every line the model prints while starting triggers a probe at once: real servers log when
  they become ready (llama-server "server is listening on ... - all slots are idle", vLLM
  "Application startup complete"), so even late in a long load the answer is seen within
  one probe round trip instead of up to 250 ms later.

Never more than one probe is in flight. A line that arrives while one is in flight asks for
exactly one more, sent as soon as that one has answered. A model printing without pause
cannot turn this into a busy loop: a probe asked for by output, following another probe asked
for by output, waits until ``DENSE_INTERVAL`` after that one answered, so output-driven
probing is never denser than the dense phase.

Cost, measured with ``http_probe`` on the 2-core benchmark machine: a refused probe (nothing
listening yet) ~0.2 ms of CPU, a probe answered 503 (llama-server while loading) ~0.6 ms of
CPU and ~1.3 ms of wall time. The dense phase is therefore ~200 probes, 40–120 ms of CPU,
once per start, and a long load ~4 probes/s afterwards (the old schedule: ~12 probes in the
first second). What it buys, measured with ``python bench/run.py --only swap`` (an upstream
ready ~165 ms after its spawn, printing a llama-server-like line then): the old schedule,
10 ms → ×1.5 → 250 ms, saw it at the probe at ~208 ms or ~322 ms after the spawn, ~50 ms
late on average; now the line's probe sees it within ~1 ms, and a silent server within 5 ms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from llamaswap.upstream import UpstreamClient, read_body

DENSE_INTERVAL = 0.005
"""Seconds between probes while the start is young (and the floor for output-driven ones)."""
DENSE_PERIOD = 1.0
"""Seconds after the start during which probes follow each other at ``DENSE_INTERVAL``."""
MAX_INTERVAL = 0.25
BACKOFF = 1.5
PROBE_TIMEOUT = 2.0

Probe = Callable[[float], "Deferred[bool]"]
"""Given a timeout in seconds, fires with True when the model answered healthy."""


class HealthTimeout(Exception):
    """The model did not become healthy before its deadline."""


def http_probe(reactor: IReactorTime, url: str) -> Probe:
    """A probe that GETs ``url`` and is healthy on HTTP 200; every failure counts as not yet.

    Uses its own client keeping no idle connection, so probes never occupy the data path's
    connections, on endpoints where a refused connection (a model still starting) fails at
    once. Redirects are not followed. ``timeout`` is enforced by the caller (cancelling).
    """
    client = UpstreamClient(reactor, max_idle_per_origin=0)

    async def probe_once(timeout: float) -> bool:
        try:
            response = await client.request(b"GET", url, Headers(), None)
            await read_body(response)
        except CancelledError:
            raise
        except Exception:
            return False  # refused, reset, malformed: not ready yet
        return bool(response.code == 200)

    return lambda timeout: Deferred.fromCoroutine(probe_once(timeout))


class ReadinessPoller:
    """Probes one start until the model is healthy; see the module docstring for the schedule.

    ``start()`` returns a Deferred that fires once ``probe`` answers True, or fails with
    ``HealthTimeout`` after ``timeout`` seconds. With ``progress`` (the time the model last
    showed signs of life, e.g. printed a line), the deadline is ``timeout`` after the later of
    the start and that time: a big model that is visibly loading is not killed for being
    slow. Cancelling that Deferred cancels the pending timer and the probe in flight.
    ``output()`` tells the poller that the model printed a line. Reactor thread only.
    """

    def __init__(
        self,
        clock: IReactorTime,
        probe: Probe,
        timeout: float,
        *,
        dense_interval: float = DENSE_INTERVAL,
        dense_period: float = DENSE_PERIOD,
        max_interval: float = MAX_INTERVAL,
        backoff: float = BACKOFF,
        progress: Callable[[], float] | None = None,
    ) -> None:
        self._clock = clock
        self._probe = probe
        self._timeout = timeout
        self._dense_interval = dense_interval
        self._dense_period = dense_period
        self._max_interval = max_interval
        self._backoff = backoff
        self._progress = progress
        self._started = 0.0
        self._interval = dense_interval
        self._result: Deferred[None] | None = None
        self._done = False
        self._timer: IDelayedCall | None = None
        self._timer_by_output = False
        self._in_flight: Deferred[bool] | None = None
        self._in_flight_by_output = False
        self._last_by_output = False
        """Whether the last probe that answered was one asked for by output."""
        self._last_answer = float("-inf")
        self._output_waiting = False
        """A line arrived while a probe was in flight: probe again once it answers."""
        self.probes = 0
        """Probes sent so far (for tests and debugging)."""

    # -- what callers use -------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Begin polling with a probe now; the Deferred fires when healthy (see the class)."""
        if self._result is not None:
            raise RuntimeError("ReadinessPoller.start() called twice")
        self._result = Deferred(self._cancel)
        self._started = self._clock.seconds()
        self._probe_now(by_output=False)
        return self._result

    def output(self) -> None:
        """The model printed a line: probe at once (or once the probe in flight answered)."""
        if self._done or self._result is None:
            return
        if self._in_flight is not None:
            self._output_waiting = True
            return
        self._schedule(self._output_delay(), by_output=True)

    # -- mechanism --------------------------------------------------------------------------

    def _deadline(self) -> float:
        last = self._progress() if self._progress is not None else self._started
        return max(self._started, last) + self._timeout

    def _output_delay(self) -> float:
        """0, unless the previous probe was output-driven too: then the dense interval."""
        if not self._last_by_output:
            return 0.0
        return max(0.0, self._last_answer + self._dense_interval - self._clock.seconds())

    def _next_interval(self) -> float:
        if self._clock.seconds() - self._started < self._dense_period:
            return self._dense_interval
        self._interval = min(self._interval * self._backoff, self._max_interval)
        return self._interval

    def _schedule(self, delay: float, by_output: bool) -> None:
        """Probe after ``delay``, unless a probe is already due no later than that.

        A probe that serves a request from output counts as output-driven, whichever asked
        first: that is what keeps output-driven probing at most as dense as the dense phase.
        """
        now = self._clock.seconds()
        if self._timer is not None:
            if self._timer.getTime() <= now + delay:
                self._timer_by_output = self._timer_by_output or by_output
                return
            self._timer.cancel()
        remaining = self._deadline() - now
        self._timer = self._clock.callLater(max(0.0, min(delay, remaining)), self._fire)
        self._timer_by_output = by_output

    def _fire(self) -> None:
        self._timer = None
        self._probe_now(self._timer_by_output)

    def _probe_now(self, by_output: bool) -> None:
        remaining = self._deadline() - self._clock.seconds()
        if remaining <= 0:
            self._finish(Failure(HealthTimeout(
                f"health check timed out after {self._timeout:g}s")))
            return
        self.probes += 1
        probe_timeout = min(PROBE_TIMEOUT, remaining)
        d = self._probe(probe_timeout)
        d.addTimeout(probe_timeout, self._clock)
        self._in_flight, self._in_flight_by_output = d, by_output
        d.addBoth(self._answered, d)

    def _answered(self, result: Any, d: Deferred[bool]) -> None:
        if self._in_flight is d:
            self._in_flight = None
        if self._done:
            return  # cancelled meanwhile; the failure of the cancelled probe is expected
        healthy = result is True  # a probe that timed out or broke means "not yet"
        if healthy:
            self._finish(None)
            return
        self._last_answer = self._clock.seconds()
        self._last_by_output = self._in_flight_by_output
        if self._deadline() - self._last_answer <= 0:
            self._finish(Failure(HealthTimeout(
                f"health check timed out after {self._timeout:g}s")))
            return
        self._schedule(self._next_interval(), by_output=False)
        if self._output_waiting:
            self._output_waiting = False
            self._schedule(self._output_delay(), by_output=True)

    def _finish(self, outcome: Failure | None) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        assert self._result is not None
        if outcome is None:
            self._result.callback(None)
        else:
            self._result.errback(outcome)

    def _cancel(self, _: Deferred[None]) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.cancel()
