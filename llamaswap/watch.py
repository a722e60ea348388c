"""How the router watches each model: idle TTL, failures and the circuit breaker, hangs
and liveness probes.

``ModelWatch`` owns these timers and counts. The ``Router`` (``router.py``) tells it what
happens to a model (granted a request, idle again, ready, stopped, reconfigured) and asks it
whether a model may be started (``circuit``, ``not_before``); it reads the router's process,
in-flight and swap tables and stops a model through the router. The backoff and
failure-window arithmetic is pure (``supervision.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from llamaswap.config import ModelConfig
from llamaswap.policy import ModelState
from llamaswap.process import ModelProcess
from llamaswap.supervision import backoff_delay, recent
from llamaswap.tickets import CircuitOpen

LIVENESS_MISSES = 2
"""Consecutive failed liveness probes after which an idle model counts as hung."""


class ModelWatch:
    """TTL, failure, hang and liveness bookkeeping for the ``Router`` (module docstring).

    ``processes``, ``in_flight`` and ``swaps`` are the router's own tables, read (never
    changed) here; ``closing`` says whether the router is shutting down; ``stop`` stops a
    model (``reason=``, ``timeout=``); ``fail_waiters_for`` fails the requests waiting for a
    model whose circuit opened; ``bug`` logs an unexpected failure.
    """

    def __init__(self, clock: IReactorTime, log: Any, *,
                 processes: Mapping[str, ModelProcess], in_flight: Counter[str],
                 swaps: Mapping[str, Any], closing: Callable[[], bool],
                 model_config: Callable[[str], ModelConfig],
                 stop: Callable[..., Deferred[None]],
                 fail_waiters_for: Callable[[str | None, Exception], None],
                 bug: Callable[[Failure, str], None]) -> None:
        self.log = log
        self._clock = clock
        self._processes = processes
        self._in_flight = in_flight
        self._swaps = swaps
        self._closing = closing
        self._model_config = model_config
        self._stop = stop
        self._fail_waiters_for = fail_waiters_for
        self._bug = bug
        self._failures: dict[str, list[float]] = {m: [] for m in processes}
        self._ttl_timers: dict[str, IDelayedCall] = {}
        self._hang_timers: dict[str, IDelayedCall] = {}
        self._liveness_timers: dict[str, IDelayedCall] = {}
        self._liveness_misses: Counter[str] = Counter()
        self.hung_models: set[str] = set()
        """Models declared hung and killed, until they are ready again."""
        self.hangs: Counter[str] = Counter()
        """How many times each model was declared hung (for metrics)."""

    # -- what happens to a model ------------------------------------------------------------

    def busy(self, model: str) -> None:
        """A request was granted on ``model``: no TTL or liveness probe while it runs, and a
        hang timer if the model has one."""
        self._cancel_timer(self._ttl_timers, model)
        self._cancel_timer(self._liveness_timers, model)
        hang_timeout = self._model_config(model).supervision.hang_timeout
        if hang_timeout > 0 and model not in self._hang_timers:
            self._hang_timers[model] = self._clock.callLater(hang_timeout, self._hung, model)

    def idle(self, model: str) -> None:
        """The last request on ``model`` ended."""
        self._cancel_timer(self._hang_timers, model)
        self._arm_ttl(model)
        self._arm_liveness(model)

    def ready(self, model: str) -> None:
        self.hung_models.discard(model)
        self._arm_ttl(model)
        self._arm_liveness(model)

    def stopped(self, model: str) -> None:
        self._cancel_timer(self._ttl_timers, model)
        self._cancel_timer(self._hang_timers, model)
        self._cancel_timer(self._liveness_timers, model)

    def reconfigured(self, model: str) -> None:
        """``model``'s settings changed (a reload): a new TTL counts from now if it is idle."""
        self._cancel_timer(self._ttl_timers, model)
        self._arm_ttl(model)

    def adopt(self, model: str) -> None:
        self._failures.setdefault(model, [])

    def forget(self, model: str) -> None:
        self._failures.pop(model, None)

    def clear_failures(self, model: str) -> None:
        """An operator's unload closes the circuit."""
        self._failures[model] = []

    def close(self) -> None:
        """Shutting down: every timer off."""
        for timers in (self._ttl_timers, self._hang_timers, self._liveness_timers):
            for model in list(timers):
                self._cancel_timer(timers, model)

    def circuit_open(self, model: str) -> bool:
        return model in self._failures and self.circuit(model) is not None

    # -- TTL --------------------------------------------------------------------------------

    def _arm_ttl(self, model: str) -> None:
        ttl = self._model_config(model).ttl
        if ttl <= 0 or self._in_flight[model] or self._closing():
            return
        if self._processes[model].state is not ModelState.READY:
            return
        self._cancel_timer(self._ttl_timers, model)
        self._ttl_timers[model] = self._clock.callLater(ttl, self._ttl_expired, model)

    def _ttl_expired(self, model: str) -> None:
        self._ttl_timers.pop(model, None)
        if self._in_flight[model] or model in self._swaps:
            return
        if self._processes[model].state is not ModelState.READY:
            return
        self.log.info("{model}: unloading after TTL of {ttl:g}s", model=model,
                      ttl=self._model_config(model).ttl)
        self._stop(model, reason="ttl").addErrback(self._bug, "ttl stop")

    # -- supervision: failures, backoff, circuit, hangs, liveness ---------------------------

    def record_failure(self, model: str, why: str) -> None:
        settings = self._model_config(model).supervision
        now = self._clock.seconds()
        self._failures[model] = [*recent(self._failures[model], now, settings), now]
        count = len(self._failures[model])
        if count >= settings.max_failures:
            self.log.error("{model}: failed {count} times in {window:g}s; refusing requests "
                           "until the window passes or it is unloaded (last error: {why})",
                           model=model, count=count, window=settings.failure_window, why=why)
            circuit = self.circuit(model)
            if circuit is not None:
                self._fail_waiters_for(model, circuit)
        else:
            self.log.warn("{model}: failure {count} of {max}; next start in {delay:g}s at the "
                          "earliest", model=model, count=count, max=settings.max_failures,
                          delay=backoff_delay(settings, count))

    def circuit(self, model: str) -> CircuitOpen | None:
        settings = self._model_config(model).supervision
        now = self._clock.seconds()
        failures = recent(self._failures[model], now, settings)
        if len(failures) < settings.max_failures:
            return None
        retry = failures[0] + settings.failure_window - now
        last = self._processes[model].last_error or "unknown error"
        return CircuitOpen(f"model {model} failed {len(failures)} times in the last "
                           f"{settings.failure_window:g}s and is not started again for "
                           f"{retry:.0f}s; last error: {last}", "model_failing",
                           retry_after=max(1.0, retry))

    def not_before(self) -> dict[str, float]:
        now = self._clock.seconds()
        result = {}
        for model, failures in self._failures.items():
            settings = self._model_config(model).supervision
            failures = recent(failures, now, settings)
            if failures:
                result[model] = failures[-1] + backoff_delay(settings, len(failures))
        return result

    def activity(self, model: str) -> None:
        """``model`` sent something for a request: it is not hung."""
        timer = self._hang_timers.get(model)
        if timer is not None and timer.active():
            timer.reset(self._model_config(model).supervision.hang_timeout)

    def _hung(self, model: str) -> None:
        self._hang_timers.pop(model, None)
        timeout = self._model_config(model).supervision.hang_timeout
        self.log.error("{model}: no output for {timeout:g}s with {n} request(s) in flight: "
                       "hung; killing it", model=model, timeout=timeout,
                       n=self._in_flight[model])
        self.hangs[model] += 1
        self.hung_models.add(model)
        self._processes[model].last_error = f"hung: no output for {timeout:g}s"
        self.record_failure(model, f"hung: no output for {timeout:g}s")
        self._stop(model, timeout=0, reason="hung").addErrback(self._bug, "hang kill")

    def _arm_liveness(self, model: str) -> None:
        interval = self._model_config(model).supervision.liveness_interval
        if interval <= 0 or self._in_flight[model] or self._closing():
            return
        if self._processes[model].state is ModelState.READY and \
                model not in self._liveness_timers:
            self._liveness_timers[model] = self._clock.callLater(interval, self._live_check,
                                                                 model)

    def _live_check(self, model: str) -> None:
        self._liveness_timers.pop(model, None)
        process = self._processes[model]
        if process.state is not ModelState.READY or self._in_flight[model]:
            return

        def checked(healthy: bool) -> None:
            if healthy or process.state is not ModelState.READY:
                self._liveness_misses[model] = 0
            else:
                self._liveness_misses[model] += 1
                self.log.warn("{model}: liveness probe failed ({n} in a row)", model=model,
                              n=self._liveness_misses[model])
                if self._liveness_misses[model] >= LIVENESS_MISSES:
                    self._liveness_misses[model] = 0
                    self._hung(model)
                    return
            self._arm_liveness(model)

        timeout = min(self._model_config(model).supervision.liveness_interval, 10.0)
        process.probe_once(timeout).addCallback(checked).addErrback(self._bug, "liveness")

    @staticmethod
    def _cancel_timer(timers: dict[str, IDelayedCall], model: str) -> None:
        timer = timers.pop(model, None)
        if timer is not None and timer.active():
            timer.cancel()
