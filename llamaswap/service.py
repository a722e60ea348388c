"""``LlamaSwapService``: the models, the decision loop and the HTTP tree as one ``IService``.

Use it under twistd (``twistd -n llamaswap -c config.yaml``) or inside your own application:
add it to your ``MultiService`` and mount ``.resource`` in your own ``Site``. Stopping it
stops listening, lets requests in flight finish (bounded by ``drain_timeout``), then stops
every model and fires only when all of their processes have exited.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any
from urllib.parse import unquote

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.server import Request, Site

from llamaswap.compat.accesslog import client_ip, is_logged, request_line
from llamaswap.config import Config, ConfigError, load_config
from llamaswap.config.model import Timeouts
from llamaswap.context import ContextHolder, context_of
from llamaswap.listening import ListeningService, with_backlog
from llamaswap.logs import LogRules, LogStream, attach, detach, emit_text, get_logger
from llamaswap.observability import Observability
from llamaswap.orphans import StateFile, keeper_marker
from llamaswap.peers import Peers
from llamaswap.policy import ModelState
from llamaswap.process import DEFAULT_INSTANCE, DEFAULT_MARKER, ModelProcess
from llamaswap.redaction import redact_url
from llamaswap.reload import diff_configs
from llamaswap.router import Router
from llamaswap.selectors import Rewriter
from llamaswap.slotcache.manager import SlotCacheManager
from llamaswap.web.errors import EnvelopeErrorsMixin
from llamaswap.web.fast import FastPath
from llamaswap.web.forward import Forwarder
from llamaswap.web.limits import BodyLimitMixin
from llamaswap.web.root import build_root
from llamaswap.web.site import HardenedSite

DEFAULT_DRAIN_TIMEOUT = 10.0


class LlamaSwapService(MultiService):
    """All of llamaswap for one configuration. ``resource`` is the root of its HTTP API."""

    log = get_logger()

    def __init__(self, config: Config, reactor: Any = None,
                 drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
                 state_file: str | None = None) -> None:
        """``state_file``: where running models are recorded so that a restart after a
        crash reaps what the crashed run left (``llamaswap.orphans``); ``None``: not kept."""
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        self.config = config
        self.reactor = reactor
        self.log_rules = LogRules(config.log_level, config.log_to_stdout, self._owns)
        """This service's ``logLevel`` and ``logToStdout``, applied while it runs."""
        self.drain_timeout = drain_timeout
        self.state = (StateFile(state_file, keeper_marker(state_file))
                      if state_file else None)
        self._marker = self.state.marker if self.state else DEFAULT_MARKER
        self._instance = self.state.instance if self.state else DEFAULT_INSTANCE
        self.slot_cache = SlotCacheManager.for_config(config, reactor)
        self.processes = {model_id: self._new_process(model_id, config)
                          for model_id in config.models}
        self.router = Router(config, self.processes, reactor)
        self.slot_cache.watch(self.router)
        fast_path = FastPath.configure(config.fast_path)
        self.forwarder = Forwarder(reactor, fast_path=fast_path)
        self.forwarder.set_model_timeouts(_timeouts_by_proxy(config))
        self.observability = Observability(config, self.processes, self.router, reactor,
                                           log_rules=self.log_rules)
        """Log streams, events, metrics and the activity store (``llamaswap.observability``)."""
        self.observability.store.setServiceParent(self)
        self.slot_cache.observe(self.observability)
        self.forwarder.watch = self.observability.watch
        self.peers = Peers(config.peers, reactor, fast_path)
        """Clients of the configured peers; their pools close when the service stops."""
        self.peers.setServiceParent(self)
        self.names = Rewriter(config.selectors, config.profiles, self._target_state)
        """The active profile and the selectors: which model a requested name gets."""
        self.resource = build_root(self)
        self._listeners: list[ListeningService] = []

    def site(self) -> Site:
        """A ``Site`` serving ``resource`` with one access-log line per request, hardened
        against clients that send slowly (``llamaswap.web.site``)."""
        return ServiceSite(self.resource, self.observability, self.reactor, owner=self,
                           fast_path=FastPath.configure(self.config.fast_path))

    def listen(self, endpoint: str) -> None:
        """Serve the API on a Twisted server endpoint string (``tcp:8080``, ``unix:...``),
        with a listen backlog sized for bursts unless it names one (``llamaswap.listening``)."""
        listener = ListeningService(serverFromString(self.reactor, with_backlog(endpoint)),
                                    self.site())
        listener.setServiceParent(self)
        self._listeners.append(listener)

    def _new_process(self, model_id: str, config: Config) -> ModelProcess:
        process = ModelProcess(config.models[model_id], self.reactor,
                               health_timeout=config.health_check_timeout, output=LogStream(),
                               marker=self._marker, instance=self._instance,
                               hooks=self.slot_cache,
                               on_line=_model_logger(model_id, self._model_line, self))
        process.add_observer(self._record_state)
        return process

    # -- reload -----------------------------------------------------------------------------

    def reload(self) -> dict[str, list[str]]:
        """Re-read the config file and apply it without downtime; return what changed.

        Raises ``ConfigError`` (and changes nothing) if the new file is invalid. Models whose
        launch settings are unchanged keep running; changed ones restart once drained;
        removed ones drain and stop (``llamaswap.reload``).
        """
        new = self._load_keeping_ports()
        diff = diff_configs(self.config, new)

        def make(model_id: str) -> ModelProcess:
            process = self._new_process(model_id, new)
            self.observability.watch_process(process)
            return process

        self.router.reconfigure(new, diff, make)
        self.slot_cache.reconfigure(new.slot_cache, new.models)
        self.config = new
        self.peers.reconfigure(new.peers)
        self.names.reconfigure(new.selectors, new.profiles)
        self.forwarder.set_model_timeouts(_timeouts_by_proxy(new))
        self.observability.reconfigure(new)
        self.log_rules.set_level(new.log_level)
        self.log_rules.set_to_stdout(new.log_to_stdout)
        for warning in new.warnings:
            self.log.warn("config: {warning}", warning=warning)
        summary = diff.summary()
        self.log.info("config reloaded from {path}: {summary}", path=new.path,
                      summary=", ".join(f"{k}: {' '.join(v)}" for k, v in summary.items() if v)
                      or "no changes")
        if any(self.processes[m].state is ModelState.STOPPED for m in new.preload
               if m in self.processes):
            Deferred.fromCoroutine(self._preload()).addErrback(
                lambda f: self.log.failure("preload failed", f))
        return summary

    def _load_keeping_ports(self) -> Config:
        """The config file again, each model that is still there keeping its ``${PORT}`` (so
        adding or removing a model restarts no other). A new ``startPort`` starts over."""
        old = self.config
        kept = {m: model.port for m, model in old.models.items() if model.port is not None}
        file = None if old.config_dir and old.path == old.config_dir else old.path
        new = load_config(file, keep_ports=kept, config_dir=old.config_dir)
        if new.start_port != old.start_port:
            new = load_config(file, config_dir=old.config_dir)
        return new

    def reload_logging_errors(self) -> None:
        """Reload for signal and file-watch triggers: an invalid config is logged, kept out."""
        try:
            self.reload()
        except ConfigError as e:
            self.log.error("config reload refused, the running config stays in effect:\n"
                           "{problems}", problems=str(e))
        except Exception:
            self.log.failure("config reload failed")

    def watch_config(self, interval: float = 2.0) -> None:
        """Reload when the config file changes (checked every ``interval`` seconds)."""
        self._config_stamp = _config_stamp(self.config)
        watcher = TimerService(interval, self._check_config_file)
        watcher.clock = self.reactor
        watcher.setServiceParent(self)

    def _check_config_file(self) -> None:
        stamp = _config_stamp(self.config)
        if stamp is not None and stamp != self._config_stamp:
            self._config_stamp = stamp
            self.log.info("{path} changed; reloading", path=self.config.path)
            self.reload_logging_errors()

    def _target_state(self, name: str) -> str:
        """A selector target's state: its local model's, or ``remote`` for a peer model."""
        model_id = self.config.resolve(name)
        return self.processes[model_id].state.value if model_id else "remote"

    def _record_state(self, process: ModelProcess, old: ModelState, new: ModelState) -> None:
        if self.state is None:
            return
        if new is ModelState.STOPPED:
            self.state.forget(process.model.id)
        elif process.pid is not None and old is ModelState.STARTING:
            self.state.record(process.model.id, process.pid, list(process.model.cmd))

    def _owns(self, source: object) -> bool:
        """Whether a log event's source is one of this service's parts (``LogRules``)."""
        if isinstance(source, ModelProcess):
            return self.processes.get(source.model.id) is source
        return (source is self or source is self.router
                or source is self.observability.store)

    def startService(self) -> None:
        attach(self.log_rules)
        if self.state is not None:
            reaped = self.state.reap()  # before anything starts: ports and GPUs freed
            if reaped:
                self.log.warn("reaped {n} model process(es) left by a previous run",
                              n=len(reaped))
        self.observability.start()
        for warning in self.config.warnings:
            self.log.warn("config: {warning}", warning=warning)
        super().startService()
        if self.config.preload:
            Deferred.fromCoroutine(self._preload()).addErrback(
                lambda f: self.log.failure("preload failed", f))

    async def _preload(self) -> None:
        for model in self.config.preload:
            self.log.info("preloading {model}", model=model)
            try:
                lease = await self.router.acquire(model)
            except Exception as e:
                self.log.error("preload of {model} failed: {error}", model=model, error=str(e))
                continue
            lease.release()

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self.running = False
        self.log.info("stopping: closing listeners, draining requests, stopping models")
        self.observability.shutting_down()
        try:
            await DeferredList([d for d in (s.stopService() for s in self._listeners) if d],
                               consumeErrors=True)
            peers_drained = Deferred.fromCoroutine(self.peers.drain(self.drain_timeout))
            await self.router.shutdown(self.drain_timeout)
            await peers_drained
            others = [s for s in self if s not in self._listeners]
            await DeferredList([Deferred.fromCoroutine(_as_coroutine(s.stopService()))
                                for s in others], consumeErrors=True)
            await self.forwarder.close()
            if self.state is not None:
                self.state.close()
            self.log.info("stopped")
            self.observability.stop()
        finally:
            detach(self.log_rules)  # a stopped service's rules apply no more, whatever failed

    def _model_line(self, model_id: str, line: str) -> None:
        self.observability.model_line(model_id, line)


def _timeouts_by_proxy(config: Config) -> dict[str, Timeouts]:
    """Each model's ``timeouts`` by its proxy URL, in model-id order (the last one wins
    where two models share a server)."""
    return {config.models[m].proxy: config.models[m].timeouts for m in sorted(config.models)
            if "${" not in config.models[m].proxy}


async def _as_coroutine(result: Any) -> None:
    if isinstance(result, Deferred):
        await result


def _model_logger(model_id: str, also: Any = None, source: object = None) -> Any:
    log = get_logger(f"llamaswap.model.{model_id}", source)

    def emit(stream: str, line: str) -> None:
        if also is not None:
            also(model_id, line)
        log.info("[{model}] {line}", model=model_id, line=line, stream=stream)

    return emit


access_log = get_logger("llamaswap.access")


class ServiceSite(HardenedSite):
    """The ``Site`` of one service: its requests log one access line each (instead of
    twisted.web's) and feed that service's observability."""

    def __init__(self, resource: Any, observability: Observability, reactor: Any,
                 owner: object = None, fast_path: FastPath | None = None) -> None:
        super().__init__(resource, reactor=reactor, fast_path=fast_path)
        self.requestFactory = AccessLoggedRequest
        self.observability = observability
        self.access_log = get_logger("llamaswap.access", owner)
        self.request_ids = itertools.count(1)
        """The ``id=`` of access lines, also the activity row's ID."""

    def log(self, request: http.Request) -> None:
        """Nothing: ``AccessLoggedRequest`` writes its own line when the request ends."""


class AccessLoggedRequest(ContextHolder, EnvelopeErrorsMixin, BodyLimitMixin, Request):
    """Logs one line per request when it ends, also when the client left early (499)."""

    def process(self) -> None:
        context = context_of(self)
        context.started = time.monotonic()
        site = self.channel.site
        context.request_id = next(site.request_ids) if isinstance(site, ServiceSite) else None
        self.notifyFinish().addBoth(self._log_access)
        super().process()

    def _log_access(self, result: object) -> None:
        context = context_of(self)
        status = 499 if isinstance(result, Failure) else self.code
        duration = time.monotonic() - (context.started or 0.0)
        path = unquote(self.path.decode("latin-1"))
        site = self.site
        if is_logged(path):
            # the query stays, each credential in it [REDACTED] (llamaswap.redaction)
            uri = self.uri.decode("latin-1")
            path = redact_url(uri) if "?" in uri else path
            client = client_ip(_first_header(self, b"x-forwarded-for"),
                               _first_header(self, b"x-real-ip"),
                               getattr(self.getClientAddress(), "host", "-"))
            method = self.method.decode("ascii", "replace")
            # a requested name is client input: escaped, so one line per request
            model = (context.model if context.model is not None else "-").encode(
                "unicode_escape").decode("ascii")
            # llama-swap's line (tools parse it), formatted here once as a literal format:
            # no observer parses a template for it (that was ~5% of a proxied request); the
            # fields stay in the event for JSON logs.
            line = request_line(client, method, path, self.clientproto.decode("latin-1"),
                                status, self.sentLength,
                                _first_header(self, b"user-agent") or "", duration)
            logger = site.access_log if isinstance(site, ServiceSite) else access_log
            emit_text(logger, line, request_id=context.request_id, client=client,
                      method=method, path=path, status=status, size=self.sentLength,
                      model=model, duration=duration)
        if isinstance(site, ServiceSite):
            site.observability.request_finished(self, status, duration)


def _first_header(request: Request, name: bytes) -> str | None:
    values = request.requestHeaders.getRawHeaders(name)
    return values[0].decode("latin-1") if values else None


def _config_stamp(config: Config) -> tuple[object, ...] | None:
    """What identifies a version of the configuration: its files' stamps and, with a
    ``--config-dir``, the directory's own (a file added or removed changes it)."""
    if not config.config_dir:
        return _stamp(config.path)
    paths = [config.config_dir, *config.sources]
    if config.path != config.config_dir and config.path not in config.sources:
        paths.append(config.path)
    return tuple(_stamp(path) for path in paths)


def _stamp(path: str) -> tuple[int, int, int] | None:
    """What identifies a version of the config file: inode, size, modification time."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)
