"""What the router hands out and keeps per request: tickets, leases, the ways a wait ends.

``router.py`` holds the decision loop; these are the values it shares with the web layer
(``web/waiting.py``, ``web/queue.py``), which need them without the loop itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from llamaswap.process import ModelProcess


class LeaseOwner(Protocol):
    """What a ``Lease`` reports to (the ``Router``)."""

    def _released(self, model: str) -> None: ...


class LeaseWatch(Protocol):
    """What a ``Lease`` tells and asks of the model's watch (``watch.ModelWatch``)."""

    hung_models: set[str]

    def activity(self, model: str) -> None: ...


class QueueOwner(Protocol):
    """What a ``Ticket`` asks about its place (the ``Router``)."""

    def position(self, ticket: Ticket) -> int: ...

    def eta(self, ticket: Ticket) -> float: ...


COST_SMOOTHING = 0.3
"""Weight of the newest measurement in the moving averages of load and unload times."""


class Rejected(Exception):
    """Refused at admission (a limit); ``code`` is the API error code, ``retry_after`` seconds."""

    def __init__(self, message: str, code: str = "concurrency_limit",
                 retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


ConcurrencyLimitExceeded = Rejected  # the name earlier code and tests use


class WaitFailed(Exception):
    """Admitted, but the wait ended without the model: unloaded, shutting down, timed out,
    or unplaceable. ``retry_after`` is a hint in seconds for the client."""

    def __init__(self, message: str, code: str = "service_unavailable",
                 retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class ModelUnloaded(WaitFailed):
    """The model was unloaded while this request waited for it."""


class ShuttingDown(WaitFailed):
    """llamaswap is stopping and takes no new work."""


class QueueTimeout(WaitFailed):
    """The request waited ``routing.scheduler.queueTimeout`` without getting its model."""


class CircuitOpen(WaitFailed):
    """The model failed ``maxFailures`` times within ``failureWindow``: refused until then."""


class Lease:
    """Permission to send one request to a ready model; ``release()`` when it is done."""

    def __init__(self, router: LeaseOwner, watch: LeaseWatch, model: str,
                 process: ModelProcess) -> None:
        self.model = model
        self.process = process
        self._router: LeaseOwner | None = router
        self._watch = watch

    def touch(self) -> None:
        """The model sent something for this request: it is not hung."""
        if self._router is not None:
            self._watch.activity(self.model)

    @property
    def hung(self) -> bool:
        """Whether the model was declared hung (and killed) while this request was on it."""
        return self.model in self._watch.hung_models

    def release(self) -> None:
        router, self._router = self._router, None
        if router is not None:
            router._released(self.model)


@dataclass(eq=False)
class Ticket:
    """One admitted request's place in the system, until it is granted or fails."""

    request_id: int
    model: str
    arrived: float
    deferred: Deferred[Lease] = field(default_factory=Deferred)
    router: QueueOwner | None = None
    timeout: IDelayedCall | None = None
    path: str = ""
    """The HTTP path the request came on, for ``/api/queue`` (the router never reads it)."""
    access_id: int | None = None
    """The access log's number for the request, for ``/api/queue``."""

    def position(self) -> int:
        """1-based place among requests still queued (0 once loading or granted)."""
        return self.router.position(self) if self.router else 0

    def eta(self) -> float:
        """Estimated seconds until this request is served (learnt load times)."""
        return self.router.eta(self) if self.router else 0.0


@dataclass(eq=False)
class Swap:
    """A swap under way: the models it evicts, and the requests waiting for it."""

    evict: frozenset[str]
    started: float
    waiters: list[Ticket] = field(default_factory=list)
    loading_since: float | None = None


@dataclass
class SwapCosts:
    """Moving averages of how long a model takes to load and to unload, in seconds."""

    load: float | None = None
    unload: float | None = None

    def record(self, kind: str, seconds: float) -> None:
        old = getattr(self, kind)
        new = seconds if old is None else (1 - COST_SMOOTHING) * old + COST_SMOOTHING * seconds
        setattr(self, kind, new)
