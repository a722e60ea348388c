"""Waiting for a model on behalf of one HTTP request, honestly.

A request that cannot be served at once waits in the router's queue. Limits answer at once
(429, before anything is streamed). A streaming client is kept informed while it waits, so its
read timeout does not fire during a long load:

- SSE comment heartbeats (``: llamaswap: waiting for model m, position 2, eta 14s``) every
  ``routing.scheduler.heartbeat`` seconds, on every streaming endpoint; comments are ignored by
  SSE parsers, including the OpenAI and Anthropic SDKs.
- llama-swap's ``sendLoadingState`` on ``/v1/chat/completions``: progress as
  ``reasoning_content`` deltas, which chat UIs show as the model "thinking".

Either way the response status is 200 from the first byte, so a failure after that point is
reported inside the stream as an SSE ``error`` event with the usual JSON envelope.
"""

from __future__ import annotations

import json
import math
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IDelayedCall
from twisted.web.server import Request

from llamaswap.context import context_of
from llamaswap.exchange import relative_path
from llamaswap.policy import ModelState
from llamaswap.process import StartError
from llamaswap.tickets import Lease, Rejected, Ticket, WaitFailed
from llamaswap.web.app import App
from llamaswap.web.errors import error_body, send_error

LOADING_TICK = 1.0


async def wait_for_model(app: App, request: Request, model_id: str,
                         streaming: bool = False, loading_state: bool = False) -> Lease | None:
    """The lease to serve ``request`` on ``model_id``, or ``None`` once an error was sent.

    ``streaming``: the client asked for an event stream, so heartbeats may start it early.
    ``loading_state``: send llama-swap style loading progress (chat completions only).
    """
    ticket = app.router.enqueue(model_id,
                                path=relative_path(request, context_of(request).depth),
                                access_id=app.observability.request_id(request))
    if ticket.deferred.called:  # refused or granted at once: nothing to report meanwhile
        return await _outcome(request, ticket, None)
    keeper: _KeepAlive | None = None
    interval = app.config.scheduler.heartbeat
    if streaming and loading_state:
        keeper = _LoadingState(app, request, ticket)
    elif streaming and interval > 0:
        keeper = _Heartbeat(app, request, ticket, interval)
    try:
        return await _outcome(request, ticket, keeper)
    finally:
        if keeper is not None:
            keeper.stop()


async def _outcome(request: Request, ticket: Ticket, keeper: _KeepAlive | None) -> Lease | None:
    try:
        lease = await ticket.deferred
    except CancelledError:
        raise
    except Rejected as e:
        send_error(request, 429, str(e), code=e.code,
                   headers={"retry-after": str(math.ceil(e.retry_after))})
    except StartError as e:
        _fail(request, keeper, 500, str(e), "model_start_failed", None)
    except WaitFailed as e:
        _fail(request, keeper, 503, str(e), e.code, e.retry_after)
    else:
        if keeper is not None:
            keeper.finish()
        return lease
    return None


def _fail(request: Request, keeper: _KeepAlive | None, status: int, message: str, code: str,
          retry_after: float | None) -> None:
    if keeper is not None and keeper.started:
        keeper.error(status, message, code)
        return
    headers = {"retry-after": str(math.ceil(retry_after))} if retry_after else None
    send_error(request, status, message, code=code, headers=headers)


class _KeepAlive:
    """Starts an event stream early and writes to it until the model is ready."""

    def __init__(self, app: App, request: Request, ticket: Ticket) -> None:
        self._app = app
        self._request = request
        self._ticket = ticket
        self._timer: IDelayedCall | None = None
        self.started = False

    def _start_stream(self) -> None:
        if self.started:
            return
        self.started = True
        self._request.setResponseCode(200)
        self._request.setHeader("content-type", "text/event-stream")
        self._request.setHeader("cache-control", "no-cache")
        self._request.setHeader("x-accel-buffering", "no")
        context_of(self._request).stream_started = True

    def _write(self, data: bytes) -> None:
        if not context_of(self._request).gone:
            self._request.write(data)

    def _every(self, seconds: float) -> None:
        self._timer = self._app.reactor.callLater(seconds, self._tick, seconds)

    def _tick(self, seconds: float) -> None:
        self._timer = None
        self.update()
        self._every(seconds)

    def update(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """The model is ready; the upstream's own stream follows."""

    def error(self, status: int, message: str, code: str) -> None:
        body = json.dumps(error_body(status, message, code))
        self._write(f"event: error\ndata: {body}\n\n".encode())
        if not context_of(self._request).gone:
            self._request.finish()

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _status(self) -> str:
        position, eta = self._ticket.position(), self._ticket.eta()
        where = f"position {position}" if position else "loading"
        return f"{where}, eta {math.ceil(eta)}s"


class _Heartbeat(_KeepAlive):
    def __init__(self, app: App, request: Request, ticket: Ticket,
                 interval: float) -> None:
        super().__init__(app, request, ticket)
        self._every(interval)

    def update(self) -> None:
        self._start_stream()
        self._write(f": llamaswap: waiting for model {self._ticket.model}, "
                    f"{self._status()}\n\n".encode())


class _LoadingState(_KeepAlive):
    """llama-swap's loading stream: ``reasoning_content`` deltas while the model loads."""

    def __init__(self, app: App, request: Request, ticket: Ticket) -> None:
        super().__init__(app, request, ticket)
        self._began = app.reactor.seconds()
        self._last_status = ""
        self._start_stream()
        self._say(f"llamaswap loading model: {ticket.model}\n")
        self._every(LOADING_TICK)

    def _say(self, text: str) -> None:
        chunk: dict[str, Any] = {"choices": [{"index": 0, "delta": {"reasoning_content": text}}]}
        self._write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

    def update(self) -> None:
        status = self._status()
        if status != self._last_status:
            self._last_status = status
            self._say(f"\n{status} ")
        else:
            self._say(".")

    def finish(self) -> None:
        self._say(f"\nDone! ({self._app.reactor.seconds() - self._began:.1f}s)\n\n")


def loading_state_applies(app: App, model_id: str, path: bytes) -> bool:
    """llama-swap's rule: chat completions only, effective setting, model not ready yet."""
    if not path.split(b"?")[0].endswith(b"/chat/completions"):
        return False
    setting = app.config.models[model_id].send_loading_state
    if setting is None:
        setting = app.config.send_loading_state
    return setting and app.processes[model_id].state is not ModelState.READY

