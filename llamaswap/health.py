"""Readiness polling: probe early and often, back off gently, give up at a deadline.

llama-swap sleeps 250 ms and then polls every second; a model that is ready after 80 ms
is made to wait 250 ms for nothing. Here the first probe goes out at once and the interval
grows from 10 ms to at most 250 ms, so a cold request waits at most one short interval
beyond the model's own readiness.
"""

from __future__ import annotations

from collections.abc import Callable

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from llamaswap.web.connect import model_agent
from llamaswap.web.pool import QuietPool

INITIAL_INTERVAL = 0.01
MAX_INTERVAL = 0.25
BACKOFF = 1.5
PROBE_TIMEOUT = 2.0

Probe = Callable[[float], "Deferred[bool]"]
"""Given a timeout in seconds, fires with True when the model answered healthy."""



class HealthTimeout(Exception):
    """The model did not become healthy before its deadline."""


def http_probe(reactor: IReactorTime, url: str) -> Probe:
    """A probe that GETs ``url`` and is healthy on HTTP 200; every failure counts as not yet.

    Uses its own non-persistent pool so probes never occupy the data path's connections, and
    an agent on which a refused connection (a model still starting) fails at once.
    """
    pool = QuietPool(reactor, persistent=False)
    client = HTTPClient(model_agent(reactor, pool))

    async def probe_once(timeout: float) -> bool:
        try:
            response = await client.get(url, timeout=timeout, allow_redirects=False)
            await response.content()
        except CancelledError:
            raise
        except Exception:
            return False  # refused, reset, timed out: not ready yet
        return bool(response.code == 200)

    return lambda timeout: Deferred.fromCoroutine(probe_once(timeout))


async def wait_until_healthy(
    clock: IReactorTime,
    probe: Probe,
    timeout: float,
    initial_interval: float = INITIAL_INTERVAL,
    max_interval: float = MAX_INTERVAL,
    progress: Callable[[], float] | None = None,
) -> None:
    """Return once ``probe`` answers True; raise ``HealthTimeout`` after ``timeout`` seconds.

    With ``progress`` (the time the model last showed signs of life, e.g. printed a line),
    the deadline is ``timeout`` after the later of the start and that time: a big model that
    is visibly loading is not killed for being slow. Cancelling the awaiting Deferred cancels
    the pending sleep or probe.
    """
    started = clock.seconds()
    interval = initial_interval

    def deadline() -> float:
        last = progress() if progress is not None else started
        return max(started, last) + timeout

    while True:
        remaining = deadline() - clock.seconds()
        if remaining <= 0:
            raise HealthTimeout(f"health check timed out after {timeout:g}s")
        probe_d = probe(min(PROBE_TIMEOUT, remaining))
        probe_d.addTimeout(min(PROBE_TIMEOUT, remaining), clock)
        try:
            healthy = await probe_d
        except CancelledError:
            raise
        except Exception:  # a probe that timed out or broke means "not yet"
            healthy = False
        if healthy:
            return
        remaining = deadline() - clock.seconds()
        if remaining <= 0:
            raise HealthTimeout(f"health check timed out after {timeout:g}s")
        await deferLater(clock, min(interval, remaining))
        interval = min(interval * BACKOFF, max_interval)
