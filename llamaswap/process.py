"""One model's server process: spawn, readiness, output, stop, crash detection.

A ``ModelProcess`` owns exactly one child at a time and an explicit state
(stopped -> starting -> ready -> stopping -> stopped). Callers ask for what they need with
``ensure_ready()`` and ``stop()``, each caller getting its own Deferred; the state changes only
here. The model runs under a keeper process (``keeper.py``) that leads its own process group,
is the subreaper of everything the model starts and takes all of it down if llamaswap dies,
so a stop reaches its children and grandchildren too (also those that left the group), and
nothing outlives llamaswap even when it is SIGKILLed. Every process of the model carries
``LLAMASWAP_INSTANCE=<instance>:<model>`` in its environment (``llamaswap.orphans``).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from llamaswap.config import ModelConfig
from llamaswap.config.cmdline import split_command
from llamaswap.health import HealthTimeout, Probe, ReadinessPoller, http_probe
from llamaswap.logs import LineSplitter, LogRing, get_logger
from llamaswap.orphans import INSTANCE_VARIABLE, instance_mark, process_info
from llamaswap.policy import ModelState

KEEPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keeper.py")
"""Run as the model's parent: new process group, death with llamaswap (see keeper.py)."""
DEFAULT_MARKER = "llamaswap-keeper"
DEFAULT_INSTANCE = f"unsaved-{os.getpid()}"
"""The instance of a llamaswap without a state file: nothing reaps it, it still marks."""
KILL_FAMILY = signal.SIGUSR1
"""Asks the keeper to SIGKILL the model and all its descendants, then exit (keeper.py)."""
FAMILY_KILL_GRACE = 5.0
"""Seconds the keeper gets for that before its whole group is SIGKILLed, keeper included."""

LAST_LINES_IN_ERRORS = 5

StateObserver = Callable[["ModelProcess", ModelState, ModelState], None]
GroupSignaller = Callable[[int, int], bool]


class LaunchHooks(Protocol):
    """Work done around a model's life (the slot cache, ``llamaswap.slotcache``).

    ``after_healthy`` runs while the model is still starting (nothing is sent to it before
    it fires): once healthy, or for ``checkEndpoint: none`` once the server's pid is known
    (then the hook itself waits for what it needs); ``before_stop`` while it is stopping,
    before any signal. Neither may fail, and each bounds its own time.
    """

    def before_start(self, process: ModelProcess) -> None: ...

    def after_healthy(self, process: ModelProcess) -> Deferred[None]: ...

    def before_stop(self, process: ModelProcess) -> Deferred[None]: ...


class StartError(Exception):
    """The model could not be brought to ready; the message says why, for the client."""


class StartAborted(StartError):
    """The start was cut short by a stop (an unload, a shutdown): not the model's fault."""


def signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to a whole process group; False if the group is already gone."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def signal_process(pid: int, signum: int) -> bool:
    """Send ``signum`` to one process (the keeper: our child, not yet reaped, so its PID
    cannot have been reused); False if it is gone."""
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def port_in_use(proxy: str) -> str | None:
    """``host:port`` if the model's loopback address is already listened on by someone else.

    Checked before spawning: otherwise another program answering 200 on that port would pass
    the model's health check and get its requests. A bind with SO_REUSEADDR is a quick,
    non-blocking syscall; only an active listener makes it fail.
    """
    parts = urlsplit(proxy)
    host = {"localhost": "127.0.0.1"}.get(parts.hostname or "", parts.hostname or "")
    if host not in ("127.0.0.1", "::1") or parts.port is None:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, parts.port))
        except OSError:
            return f"{host}:{parts.port}"
    return None


def describe_exit(reason: Failure) -> str:
    status = getattr(reason.value, "status", None)
    signum = getattr(reason.value, "signal", None)
    code = getattr(reason.value, "exitCode", None)
    if signum:
        return f"killed by signal {signum}"
    if code is not None:
        return f"exit status {code}"
    return f"exit status {status}"


def health_url(model: ModelConfig) -> str:
    """What readiness polls: ``checkEndpoint`` below ``proxy``, or itself when it is a
    full URL (``docs/differences.md``)."""
    check = model.check_endpoint or "/"
    if check.startswith(("http://", "https://")):
        return check
    return model.proxy.rstrip("/") + check


class ModelProcess:
    """The supervisor of one model's server. Not thread-safe: reactor thread only."""

    log = get_logger()

    def __init__(
        self,
        model: ModelConfig,
        reactor: Any,
        *,
        health_timeout: float,
        probe: Probe | None = None,
        signal_group: GroupSignaller = signal_group,
        signal_keeper: GroupSignaller = signal_process,
        output: LogRing | None = None,
        on_line: Callable[[str, str], None] | None = None,
        marker: str = DEFAULT_MARKER,
        instance: str = DEFAULT_INSTANCE,
        check_port: bool = True,
        hooks: LaunchHooks | None = None,
    ) -> None:
        self.model = model
        self._reactor: IReactorProcess = reactor
        self._clock: IReactorTime = reactor
        self._health_timeout = health_timeout
        self._probe = probe
        self._signal_group = signal_group
        self._signal_keeper = signal_keeper
        self.output = output if output is not None else LogRing()
        self._on_line = on_line
        self.state = ModelState.STOPPED
        self.pid: int | None = None
        """The keeper's PID, which is also the model's process group ID."""
        self.model_pid: int | None = None
        """The model server's own PID, once the keeper has reported it."""
        self._marker = marker
        self._instance = instance
        self._check_port = check_port
        self.hooks = hooks
        self._stopper: Any = None
        """The running ``cmdStop``, killed if it is still running when it no longer matters."""
        self.last_error: str | None = None
        self._observers: list[StateObserver] = []
        self._ready_waiters: list[Deferred[None]] = []
        self._stop_waiters: list[Deferred[None]] = []
        self._health: Deferred[None] | None = None
        self._poller: ReadinessPoller | None = None
        """Polls the current start's readiness; told about every line the model prints."""
        self._last_output = 0.0
        self._kill_timer: IDelayedCall | None = None
        self._protocol: _ModelProtocol | None = None
        self.run = 0
        """Counts starts: a request served by run N can wait for the end of run N."""
        self._run_end_waiters: list[Deferred[None]] = []
        self._ready_on_pid = False
        """``checkEndpoint: none``: ready once the keeper has reported the server's pid."""

    # -- what callers use -------------------------------------------------------------------

    @property
    def health_timeout(self) -> float:
        """Seconds a start may take to become healthy (``healthCheckTimeout``)."""
        return self._health_timeout

    def reconfigure(self, model: ModelConfig, health_timeout: float) -> None:
        """New live settings (a config reload that left the launch settings alone)."""
        self.model = model
        self._health_timeout = health_timeout

    def add_observer(self, observer: StateObserver) -> None:
        self._observers.append(observer)

    def ensure_ready(self) -> Deferred[None]:
        """Fire when the model is ready, starting it (after a stop in progress) if needed.

        Cancelling the returned Deferred only withdraws this caller; the start goes on.
        """
        if self.state is ModelState.READY:
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._ready_waiters.remove)
        self._ready_waiters.append(waiter)
        if self.state is ModelState.STOPPED:
            self._start()
        return waiter

    def stop(self, timeout: float | None = None) -> Deferred[None]:
        """Fire once the model's process has exited (SIGTERM or cmdStop, SIGKILL after timeout).

        Callers waiting on ``ensure_ready`` get a ``StartError``: a stop wins over a start.
        """
        if self.state is ModelState.STOPPED:
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._stop_waiters.remove)
        self._stop_waiters.append(waiter)
        self._fail_ready_waiters(
            StartAborted(f"model {self.model.id} was stopped while starting"))
        if self.state is not ModelState.STOPPING:
            if self._health is not None:
                self._health.cancel()
            was_ready = self.state is ModelState.READY
            self._set_state(ModelState.STOPPING)
            timeout = self.model.unload_timeout if timeout is None else timeout
            if was_ready and self.hooks is not None and timeout > 0:  # 0 is a kill: no save
                pid = self.pid
                self.hooks.before_stop(self).addBoth(
                    lambda _: self._terminate(timeout) if self.pid == pid else None)
            else:
                self._terminate(timeout)
        return waiter

    def run_ended(self, run: int) -> Deferred[None]:
        """Fire once run ``run`` is over (its process exited and was noticed); at once if it
        is over already. Cancelling only withdraws this caller."""
        if run != self.run or self.state is ModelState.STOPPED:
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._run_end_waiters.remove)
        self._run_end_waiters.append(waiter)
        return waiter

    def server_gone(self) -> bool:
        """Whether the model server's own process is known to have exited, perhaps before
        llamaswap noticed (a zombie its keeper has not reaped yet). False if unknown."""
        if self.model_pid is None:
            return False
        info = process_info(self.model_pid)
        return info is None or info.zombie

    def environment(self) -> dict[str, str]:
        """The model's environment: llamaswap's, the model's ``env``, and the marker."""
        return {**os.environ, **dict(self.model.env),
                INSTANCE_VARIABLE: instance_mark(self._instance, self.model.id)}

    # -- mechanism --------------------------------------------------------------------------

    def _set_state(self, new: ModelState) -> None:
        old, self.state = self.state, new
        if old is not new:
            self.log.debug("{model}: {old} -> {new}", model=self.model.id, old=old.value,
                           new=new.value)
            for observer in list(self._observers):
                observer(self, old, new)

    def _start(self) -> None:
        argv = [sys.executable, "-I", "-S", KEEPER, str(os.getpid()), self._marker,
                *self.model.cmd]
        env = self.environment()
        self.last_error = None
        self.model_pid = None
        self._ready_on_pid = False
        self.run += 1
        self._set_state(ModelState.STARTING)
        if self.hooks is not None:
            self.hooks.before_start(self)
        taken = port_in_use(self.model.proxy) if self._check_port else None
        if taken is not None:
            self._start_failed(f"model {self.model.id} cannot start: {taken} is already in use "
                               "by another program")
            self._set_state(ModelState.STOPPED)
            return
        self._protocol = _ModelProtocol(self, self._clock)
        try:
            transport = self._reactor.spawnProcess(
                self._protocol, sys.executable, argv, env=env,
                childFDs={0: "w", 1: "r", 2: "r", 3: "r"})
        except Exception as e:
            self._protocol = None
            self._start_failed(f"failed to start command '{' '.join(self.model.cmd)}': {e}")
            self._set_state(ModelState.STOPPED)
            return
        self.pid = transport.pid
        self.log.debug("{model}: keeper pid {pid} starting the model", model=self.model.id,
                       pid=self.pid)
        if self.model.check_endpoint is None:
            self._ready_on_pid = True  # ready as soon as the server's pid is known
            return
        self._last_output = self._clock.seconds()
        progress = ((lambda: self._last_output)
                    if self.model.supervision.progress_resets_timeout else None)
        self._poller = ReadinessPoller(self._clock, self._health_probe(), self._health_timeout,
                                       progress=progress)
        self._health = self._poller.start()
        if self.hooks is not None:  # still starting: nothing reaches the model before it
            hooks = self.hooks
            self._health.addCallback(lambda _: hooks.after_healthy(self))
        self._health.addCallbacks(lambda _: self._became_ready(), self._health_failed)

    def _health_probe(self) -> Probe:
        if self._probe is None:
            self._probe = http_probe(self._clock, health_url(self.model))
        return self._probe

    def probe_once(self, timeout: float) -> Deferred[bool]:
        """One readiness probe now (liveness checks of an idle model); True if healthy."""
        if self.model.check_endpoint is None:
            return succeed(self.state is ModelState.READY)
        d = self._health_probe()(timeout)
        d.addTimeout(timeout, self._clock)
        d.addErrback(lambda _: False)
        return d

    def _became_ready(self) -> None:
        self._health = self._poller = None
        self.log.info("{model}: ready (pid {pid})", model=self.model.id, pid=self.model_pid)
        self._set_state(ModelState.READY)
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _health_failed(self, failure: Failure) -> None:
        self._health = self._poller = None
        if failure.check(CancelledError):
            return  # the process exited or was stopped; that path reports
        reason = str(failure.value) if failure.check(HealthTimeout) else repr(failure.value)
        self._start_failed(f"model {self.model.id} did not become ready: {reason}")
        self._set_state(ModelState.STOPPING)
        self._terminate(self.model.unload_timeout)

    def _start_failed(self, message: str) -> None:
        lines = self.output.tail(LAST_LINES_IN_ERRORS)
        if lines:
            message += "; last output:\n" + "\n".join(lines)
        self.last_error = message
        self.log.error("{model}: {message}", model=self.model.id, message=message)
        self._fail_ready_waiters(StartError(message))

    def _fail_ready_waiters(self, error: Exception) -> None:
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            waiter.errback(Failure(error))

    def _terminate(self, timeout: float) -> None:
        pid = self.pid
        if pid is None:
            return
        if self.model.cmd_stop:
            self._run_cmd_stop(pid)
        elif not self._signal_group(pid, signal.SIGTERM):
            # No group yet: the keeper has only just been spawned and not yet made it (nor
            # started the model), so SIGTERM to the keeper itself ends the start.
            self._signal_keeper(pid, signal.SIGTERM)
        self._kill_timer = self._clock.callLater(timeout, self._kill, pid, timeout)

    def _kill(self, pid: int, timeout: float) -> None:
        """The keeper SIGKILLs the model and every descendant (also those outside the group);
        if it has not exited after ``FAMILY_KILL_GRACE``, its whole group is SIGKILLed."""
        self._kill_timer = None
        self._end_stopper()
        self.log.warn("{model}: still running {timeout:g}s after stop request; sending SIGKILL",
                      model=self.model.id, timeout=timeout)
        self._signal_keeper(pid, KILL_FAMILY)
        self._kill_timer = self._clock.callLater(FAMILY_KILL_GRACE, self._kill_group, pid)

    def _kill_group(self, pid: int) -> None:
        self._kill_timer = None
        self.log.warn("{model}: the keeper did not end the model's processes; SIGKILL to its "
                      "process group", model=self.model.id)
        self._signal_group(pid, signal.SIGKILL)

    def _run_cmd_stop(self, pid: int) -> None:
        """Run ``cmdStop``; if it cannot run or fails, fall back to SIGTERM to the group."""
        def fallback(why: str) -> None:
            self.log.warn("{model}: cmdStop {why}; sending SIGTERM", model=self.model.id, why=why)
            if self.pid == pid:
                self._signal_group(pid, signal.SIGTERM)

        try:
            model_pid = self.model_pid or pid
            argv = split_command(self.model.cmd_stop.replace("${PID}", str(model_pid)))
            env = self.environment()
            done: Deferred[int] = Deferred()
            self._stopper = self._reactor.spawnProcess(_StopCommandProtocol(done), argv[0], argv,
                                                       env=env)
        except Exception as e:
            fallback(f"could not run ({e})")
            return
        done.addCallback(lambda code: None if code == 0 else fallback(f"exited with {code}"))

    def _end_stopper(self) -> None:
        stopper, self._stopper = self._stopper, None
        if stopper is not None:
            try:
                stopper.signalProcess("KILL")
            except Exception:
                pass  # it has finished already

    def _leader_exited(self) -> None:
        """The model's main process is gone: what is left of its group goes with it."""
        self._end_stopper()
        if self._kill_timer is not None and self._kill_timer.active():
            self._kill_timer.cancel()
        self._kill_timer = None
        if self.pid is not None:
            self._signal_group(self.pid, signal.SIGKILL)

    def _exited(self, reason: Failure) -> None:
        """The child was reaped and its pipes are closed: it is stopped now."""
        self.pid = None
        self.model_pid = None
        self._protocol = None
        self._ready_on_pid = False
        how = describe_exit(reason)
        if self.state is ModelState.STARTING:
            if self._health is not None:
                self._health.cancel()
            self._start_failed(f"model {self.model.id} exited during start ({how})")
        elif self.state is ModelState.READY:
            self.last_error = f"exited unexpectedly ({how})"
            self.log.error("{model}: exited unexpectedly ({how})", model=self.model.id, how=how)
        else:
            self.log.info("{model}: stopped ({how})", model=self.model.id, how=how)
        self._set_state(ModelState.STOPPED)
        waiters, self._stop_waiters = self._stop_waiters, []
        waiters += self._run_end_waiters
        self._run_end_waiters = []
        for waiter in waiters:
            waiter.callback(None)
        if self._ready_waiters and self.state is ModelState.STOPPED:
            self._start()  # someone asked for it while it was stopping

    def _reported_pid(self, data: bytes) -> None:
        """The keeper forked the model server and says its pid: the one pid the log,
        ``/running`` and events name (the keeper's own is only used to signal the group)."""
        try:
            self.model_pid = int(data.strip())
        except ValueError:
            return
        self.log.info("{model}: started pid {pid}: {cmd}", model=self.model.id,
                      pid=self.model_pid, cmd=" ".join(self.model.cmd))
        self._pid_known()

    def _pid_known(self) -> None:
        """The keeper reported the pid, or closed its pipe without one (it could not).

        Without a health check there is nothing to wait for, except the launch hooks:
        they run here, while the model is still starting, as they would once healthy."""
        if self._ready_on_pid and self.state is ModelState.STARTING:
            self._ready_on_pid = False
            if self.hooks is None:
                self._became_ready()
                return
            self._health = self.hooks.after_healthy(self)
            self._health.addCallbacks(lambda _: self._became_ready(), self._health_failed)

    def _line(self, stream: str, line: str) -> None:
        self._last_output = self._clock.seconds()
        self.output.append(line)
        if self._on_line is not None:
            self._on_line(stream, line)
        if self._poller is not None:
            self._poller.output()  # servers log when they become ready: look at once


class _ModelProtocol(ProcessProtocol):
    """Reads every byte the child writes (an unread pipe would block it) into lines.

    The end is reported once the pipes are closed too, so the last lines a dying model
    printed are in its log before anyone reads the error; a grandchild holding the pipes
    open cannot delay it (the group is killed when the leader exits, with a short backstop).
    """

    PIPES_BACKSTOP = 1.0

    def __init__(self, owner: ModelProcess, clock: IReactorTime) -> None:
        self._owner = owner
        self._clock = clock
        self._out = LineSplitter(lambda line: owner._line("stdout", line))
        self._err = LineSplitter(lambda line: owner._line("stderr", line))
        self._exit_reason: Failure | None = None
        self._backstop: IDelayedCall | None = None
        self._reported = False

    def outReceived(self, data: bytes) -> None:
        self._out.feed(data)

    def errReceived(self, data: bytes) -> None:
        self._err.feed(data)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 3:
            self._owner._reported_pid(data)
        else:
            super().childDataReceived(childFD, data)

    def childConnectionLost(self, childFD: int) -> None:
        if childFD == 3:
            self._owner._pid_known()

    def processExited(self, reason: Failure) -> None:
        self._exit_reason = reason
        self._owner._leader_exited()
        self._backstop = self._clock.callLater(self.PIPES_BACKSTOP, self._report, reason)

    def processEnded(self, reason: Failure) -> None:
        self._report(self._exit_reason or reason)

    def _report(self, reason: Failure) -> None:
        if self._reported:
            return
        self._reported = True
        if self._backstop is not None and self._backstop.active():
            self._backstop.cancel()
        self._out.flush()
        self._err.flush()
        self._owner._exited(reason)


class _StopCommandProtocol(ProcessProtocol):
    def __init__(self, done: Deferred[int]) -> None:
        self._done = done

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        self._done.callback(code if code is not None else -1)

