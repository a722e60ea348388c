"""How the router watches each model: idle TTL, failures and the circuit breaker, hangs
and liveness probes.

``ModelWatch`` is the ``Router``'s part that arms and reads these timers and counts; it is
mixed into ``Router`` (``router.py``), whose state it shares, and is kept apart so that the
decision loop reads on its own. The backoff and failure-window arithmetic is pure
(``supervision.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
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
    """TTL, failure, hang and liveness bookkeeping for the ``Router`` (module docstring)."""

    # The Router's state and methods this part uses.
    log: Any
    _clock: IReactorTime
    _processes: dict[str, ModelProcess]
    _in_flight: Counter[str]
    _swaps: dict[str, Any]
    _closing: bool
    _failures: dict[str, list[float]]
    _ttl_timers: dict[str, IDelayedCall]
    _hang_timers: dict[str, IDelayedCall]
    _liveness_timers: dict[str, IDelayedCall]
    _liveness_misses: Counter[str]
    hung_models: set[str]
    hangs: Counter[str]
    _model_config: Callable[[str], ModelConfig]
    _stop: Callable[..., Deferred[None]]
    _fail_waiters_for: Callable[[str | None, Exception], None]
    _bug: Callable[[Failure, str], None]

    # -- TTL --------------------------------------------------------------------------------

    def _arm_ttl(self, model: str) -> None:
        ttl = self._model_config(model).ttl
        if ttl <= 0 or self._in_flight[model] or self._closing:
            return
        if self._processes[model].state is not ModelState.READY:
            return
        self._cancel_ttl(model)
        self._ttl_timers[model] = self._clock.callLater(ttl, self._ttl_expired, model)

    def _cancel_ttl(self, model: str) -> None:
        timer = self._ttl_timers.pop(model, None)
        if timer is not None and timer.active():
            timer.cancel()

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

    def _record_failure(self, model: str, why: str) -> None:
        settings = self._model_config(model).supervision
        now = self._clock.seconds()
        self._failures[model] = [*recent(self._failures[model], now, settings), now]
        count = len(self._failures[model])
        if count >= settings.max_failures:
            self.log.error("{model}: failed {count} times in {window:g}s; refusing requests "
                           "until the window passes or it is unloaded (last error: {why})",
                           model=model, count=count, window=settings.failure_window, why=why)
            circuit = self._circuit(model)
            if circuit is not None:
                self._fail_waiters_for(model, circuit)
        else:
            self.log.warn("{model}: failure {count} of {max}; next start in {delay:g}s at the "
                          "earliest", model=model, count=count, max=settings.max_failures,
                          delay=backoff_delay(settings, count))

    def _circuit(self, model: str) -> CircuitOpen | None:
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

    def _not_before(self) -> dict[str, float]:
        now = self._clock.seconds()
        result = {}
        for model, failures in self._failures.items():
            settings = self._model_config(model).supervision
            failures = recent(failures, now, settings)
            if failures:
                result[model] = failures[-1] + backoff_delay(settings, len(failures))
        return result

    def _activity(self, model: str) -> None:
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
        self._record_failure(model, f"hung: no output for {timeout:g}s")
        self._stop(model, timeout=0, reason="hung").addErrback(self._bug, "hang kill")

    def _arm_liveness(self, model: str) -> None:
        interval = self._model_config(model).supervision.liveness_interval
        if interval <= 0 or self._in_flight[model] or self._closing:
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
