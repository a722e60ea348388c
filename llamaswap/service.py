"""``LlamaSwapService``: the models, the decision loop and the HTTP tree as one ``IService``.

Use it under twistd (``twistd -n llamaswap -c config.yaml``) or inside your own application:
add it to your ``MultiService`` and mount ``.resource`` in your own ``Site``. Stopping it
stops listening, lets requests in flight finish (bounded by ``drain_timeout``), then stops
every model and fires only when all of their processes have exited.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.python.failure import Failure
from twisted.web.server import Request, Site

from llamaswap.config import Config
from llamaswap.logs import get_logger, set_log_level
from llamaswap.process import ModelProcess
from llamaswap.router import Router
from llamaswap.web.forward import Forwarder
from llamaswap.web.resources import build_root

DEFAULT_DRAIN_TIMEOUT = 10.0


class LlamaSwapService(MultiService):
    """All of llamaswap for one configuration. ``resource`` is the root of its HTTP API."""

    log = get_logger()

    def __init__(self, config: Config, reactor: Any = None,
                 drain_timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        self.config = config
        self.reactor = reactor
        set_log_level(config.log_level)
        self.drain_timeout = drain_timeout
        self.processes = {
            model_id: ModelProcess(model, reactor, health_timeout=config.health_check_timeout,
                                   on_line=_model_logger(model_id))
            for model_id, model in config.models.items()
        }
        self.router = Router(config, self.processes, reactor)
        self.forwarder = Forwarder(reactor)
        self.resource = build_root(self)
        self._listeners: list[StreamServerEndpointService] = []

    def site(self) -> Site:
        """A ``Site`` serving ``resource`` with one access-log line per request."""
        site = Site(self.resource)
        site.requestFactory = AccessLoggedRequest
        site.log = lambda request: None  # type: ignore[method-assign]  # ours is per request
        return site

    def listen(self, endpoint: str) -> None:
        """Serve the API on a Twisted server endpoint string (``tcp:8080``, ``unix:...``)."""
        listener = StreamServerEndpointService(serverFromString(self.reactor, endpoint),
                                               self.site())
        listener._raiseSynchronously = True
        listener.setServiceParent(self)
        self._listeners.append(listener)

    def startService(self) -> None:
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
        await DeferredList([d for d in (s.stopService() for s in self._listeners) if d],
                           consumeErrors=True)
        await self.router.shutdown(self.drain_timeout)
        others = [s for s in self if s not in self._listeners]
        await DeferredList([Deferred.fromCoroutine(_as_coroutine(s.stopService()))
                            for s in others], consumeErrors=True)
        await self.forwarder.close()
        self.log.info("stopped")


async def _as_coroutine(result: Any) -> None:
    if isinstance(result, Deferred):
        await result


def _model_logger(model_id: str) -> Any:
    log = get_logger(f"llamaswap.model.{model_id}")

    def emit(stream: str, line: str) -> None:
        log.info("[{model}] {line}", model=model_id, line=line, stream=stream)

    return emit


access_log = get_logger("llamaswap.access")


class AccessLoggedRequest(Request):
    """Logs one line per request when it ends, also when the client left early (499)."""

    def process(self) -> None:
        self._llamaswap_started = time.monotonic()
        self.notifyFinish().addBoth(self._log_access)
        super().process()

    def _log_access(self, result: object) -> None:
        status = 499 if isinstance(result, Failure) else self.code
        client = getattr(self.getClientAddress(), "host", "-")
        access_log.info(
            '{client} "{method} {path}" {status} {size} model={model} {duration:.3f}s',
            client=client, method=self.method.decode("ascii", "replace"),
            path=self.uri.decode("latin-1").encode("unicode_escape").decode("ascii"),
            status=status, size=self.sentLength,
            model=getattr(self, "llamaswap_model", "-"),
            duration=time.monotonic() - self._llamaswap_started)
