"""Model routes: body -> model -> wait for it -> forward -> relay, as llama-swap routes them.

The routes of ``routes.MODEL_ROUTES`` name their model in the request; ``/upstream/<model>/``
names it in the path. A local model is waited for (its turn in the queue, a swap) and the
request relayed to its server; a peer's model is relayed straight through (no swap).
"""

from __future__ import annotations

from urllib.parse import unquote

from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from twisted.web.server import NOT_DONE_YET, Request

from llamaswap.context import RequestContext, context_of
from llamaswap.logs import get_logger
from llamaswap.passthrough import COMFYUI_MODEL, comfyui_refusal, is_websocket_upgrade, refusal
from llamaswap.policy import ModelState
from llamaswap.selectors import Disabled, NoTarget
from llamaswap.web import auth
from llamaswap.web.app import App
from llamaswap.web.base import Branch, Endpoint, Routes, run_async
from llamaswap.web.errors import send_error
from llamaswap.web.forward import UpstreamUnavailable, upstream_headers
from llamaswap.web.limits import body_length
from llamaswap.web.modelrequest import IN_MEMORY_LIMIT, BadRequest, ModelRequest, extract
from llamaswap.web.multipart import stream_file
from llamaswap.web.redirect import redirect
from llamaswap.web.relay import UpstreamBroke
from llamaswap.web.routes import MODEL_ROUTES, ModelRoute
from llamaswap.web.tunnel import relay_websocket
from llamaswap.web.unanswered import may_replay, replay_wait
from llamaswap.web.waiting import loading_state_applies, wait_for_model

log = get_logger()


def model_routes(app: App) -> Routes:
    """Every model route, and ``/upstream``."""
    return [*((route.path.encode(), ModelEndpoint(app, route)) for route in MODEL_ROUTES),
            (b"/upstream", Upstream(app)), (b"/comfyui", ComfyUI(app))]


def relative_uri(request: Request, depth: int) -> bytes:
    """The request's raw URI (escaping and query kept) below llamaswap's mount point,
    ``depth`` path segments deep (``RequestContext.depth``)."""
    if not depth:
        return request.uri
    raw_path, sep, query = request.uri.partition(b"?")
    return b"/" + b"/".join(raw_path.split(b"/")[1 + depth:]) + sep + query


def local_headers(app: App, request: Request, model_id: str) -> Headers:
    """Headers for a local model: the client's API key is llamaswap's, not the model's;
    the model's own ``upstreamHeaders`` are set instead."""
    headers = upstream_headers(request)
    if app.config.api_keys:
        for name in auth.CLIENT_KEY_HEADERS:
            headers.removeHeader(name)
    for header, value in app.config.models[model_id].upstream_headers:
        headers.setRawHeaders(header.encode("latin-1"), [value.encode("utf-8")])
    return headers


def spooled_body(request: Request) -> bytes | IBodyProducer | None:
    """The request body as received: small ones as bytes, large ones streamed from disk."""
    length = body_length(request.content)
    if request.content is None or length == 0:
        return None if request.method in (b"GET", b"HEAD", b"DELETE", b"OPTIONS") else b""
    if length <= IN_MEMORY_LIMIT:
        request.content.seek(0)
        body: bytes = request.content.read()
        return body
    return stream_file(request.content, length)


def key_refuses(request: Request, context: RequestContext, model: str) -> bool:
    """Answer 403 if the request's API key is limited to other models (``apiKeys[].models``;
    such a key may use local models only). Records ``model`` as the one the request uses."""
    context.model = model
    allowed = context.allowed_models
    if allowed is None or model in allowed:
        return False
    send_error(request, 403, f"this API key may not use model {model}", code="forbidden")
    return True


class ModelEndpoint(Branch):
    """A model route (``routes.MODEL_ROUTES``): find the model, then serve it locally
    (swap, streaming proxy) or through a peer (straight through, no swap)."""

    def __init__(self, app: App, route: ModelRoute) -> None:
        super().__init__()
        self._app = app
        self._route = route

    def render(self, request: Request) -> bytes | int:
        method = request.method.decode("ascii", "replace")
        allowed = {*self._route.methods, *(["HEAD"] if "GET" in self._route.methods else [])}
        if method not in allowed:
            send_error(request, 405, f"method {method} not allowed on this path",
                       headers={"allow": ", ".join(sorted(allowed))})
            return NOT_DONE_YET
        return run_async(request, self._serve)

    async def _serve(self, request: Request) -> None:
        try:
            wanted = extract(request)
        except BadRequest as e:
            send_error(request, 400, str(e), code="invalid_request_body")
            return
        context = context_of(request)
        context.model = wanted.requested
        uri = relative_uri(request, context.depth)
        prefix = self._route.strip_prefix.encode()
        if prefix and uri.startswith(prefix + b"/"):
            uri = uri[len(prefix):]
        streaming = (wanted.data.get("stream") is True if wanted.data is not None
                     else request.args.get(b"stream") == [b"true"])
        as_sent = wanted.requested
        try:
            # Profile pin, then selector: the body's model becomes the name served.
            wanted.requested, release = self._app.names.rewrite(as_sent)
        except Disabled as e:
            send_error(request, 404, str(e), code="model_not_found")
            return
        except NoTarget as e:
            send_error(request, 503, str(e), headers={"retry-after": "1"})
            return
        websocket = is_websocket_upgrade(request.requestHeaders)
        if websocket and self._ignores_websockets(wanted.requested):
            release()  # a long-lived ignored websocket must not weigh on a selector's choices
        try:
            if websocket and self._app.config.resolve(wanted.requested) is not None:
                await self._websocket(request, wanted.requested, uri)
                return
            await self._dispatch(request, context, wanted, as_sent, uri, streaming)
        finally:
            release()

    def _ignores_websockets(self, name: str) -> bool:
        model_id = self._app.config.resolve(name)
        return model_id is not None and self._app.config.models[model_id].ignore_websockets

    async def _websocket(self, request: Request, name: str, uri: bytes) -> None:
        """A websocket upgrade on a model route (``GET /props?model=m``): relayed as one, as
        through ``/upstream/<model>/``; with ``compat.ignoreWebsockets`` only to a ready
        model (409 otherwise)."""
        model_id = self._app.config.resolve(name)
        assert model_id is not None
        ready = self._app.processes[model_id].state is ModelState.READY
        if self._ignores_websockets(name) and not ready:
            send_error(request, 409, f"model {model_id} is not loaded; ignored websocket "
                       "requests cannot start it", code="model_not_loaded")
            return
        await _websocket(self._app, request, model_id, uri)

    async def _dispatch(self, request: Request, context: RequestContext, wanted: ModelRequest,
                        as_sent: str, uri: bytes, streaming: bool) -> None:
        config = self._app.config
        model_id = config.resolve(wanted.requested)
        if model_id is not None:
            model = config.models[model_id]
            rename = model.use_model_name or (
                wanted.requested if wanted.requested != as_sent else "")
            body, uri = wanted.upstream(uri, rename, model.filters)
            await proxy_to_model(self._app, request, model_id, uri, body, streaming=streaming,
                                 headers=local_headers(self._app, request, model_id))
            return
        remote = config.resolve_peer(wanted.requested)
        if remote is None:
            send_error(request, 404, f"model '{wanted.requested}' not found",
                       code="model_not_found")
            return
        peer_id, peer_model = remote
        if key_refuses(request, context, f"{peer_id}/{peer_model}"):
            return
        rename = peer_model if as_sent != peer_model else ""
        body, uri = wanted.upstream(uri, rename, config.peers[peer_id].filters)
        await self._app.peers.forward(request, peer_id, uri, body, upstream_headers(request))


async def proxy_to_model(app: App, request: Request, model_id: str,
                         upstream_uri: bytes, body: bytes | IBodyProducer | None,
                         streaming: bool = False, headers: Headers | None = None) -> None:
    """Wait for ``model_id`` to be ready (its turn, a swap), then relay the request.

    ``streaming``: the client asked for an event stream, so it may be kept informed while
    it waits (``web/waiting.py``).
    """
    if key_refuses(request, context_of(request), model_id):
        return
    replays = 0
    while True:  # again only for a request the model never answered (web/unanswered.py)
        loading = streaming and loading_state_applies(app, model_id, upstream_uri)
        lease = await wait_for_model(app, request, model_id, streaming, loading)
        if lease is None:
            return
        run = lease.process.run
        try:
            url = lease.process.model.proxy.rstrip("/") + upstream_uri.decode("latin-1")
            await app.forwarder.forward(request, url, body,
                                        headers or local_headers(app, request, model_id),
                                        activity=lease.touch)
            return
        except UpstreamUnavailable as e:
            if (e.unanswered is not None and not lease.hung
                    and may_replay(e.unanswered, body, replays)):
                replays += 1
                log.warn("{model}: no answer ({why}); sending the request again once the "
                         "model is back (replay {n})", model=model_id, why=str(e), n=replays)
                lease.release()
                await replay_wait(lease.process, run, app.reactor)
                continue
            if lease.hung:
                send_error(request, 502, f"model {model_id} stopped answering and was killed: "
                           f"{lease.process.last_error}", code="model_hung")
            else:
                send_error(request, 502, f"model {model_id} did not answer: {e}",
                           code="upstream_unavailable")
            return
        except UpstreamBroke as e:
            log.warn("{model}: response cut off{hung}: {why}", model=model_id, why=str(e),
                     hung=" (the model hung and was killed)" if lease.hung else "")
            return
        finally:
            lease.release()


class Upstream(Endpoint):
    """``/upstream/<model>/<path>``: any method, straight to that model's server.

    Model IDs may contain slashes, so the longest configured name that prefixes the path
    wins; the rest of the path is forwarded with its percent-encoding untouched.
    """

    allow_subpaths = True

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    def render(self, request: Request) -> int:
        return run_async(request, self._handle)

    def _resolve(self, name: str) -> tuple[str | None, tuple[str, str] | None]:
        """A path prefix -> local model or peer model, after the active profile's pins."""
        if not name:
            return None, None
        try:
            name = self._app.names.pinned(name)
        except Disabled:
            return None, None
        model_id = self._app.config.resolve(name)
        return model_id, (None if model_id else self._app.config.resolve_peer(name))

    async def _handle(self, request: Request) -> None:
        raw_path, _, query = request.uri.partition(b"?")
        segments = raw_path.split(b"/")[1 + len(request.prepath or []):]  # below /upstream
        for cut in range(len(segments), 0, -1):
            name = unquote(b"/".join(segments[:cut]).decode("latin-1"))
            model_id, remote = self._resolve(name)
            if model_id is not None or remote is not None:
                break
        else:
            if not segments and request.method in (b"GET", b"HEAD"):  # to the UI's models
                redirect(request, b"/ui/models")
                return
            send_error(request, 404, "no known model in path", code="model_not_found")
            return
        if cut == len(segments):  # /upstream/<model> without a trailing slash
            status = 301 if request.method in (b"GET", b"HEAD") else 308
            location = raw_path + b"/" + (b"?" + query if query else b"")
            request.setResponseCode(status)
            request.setHeader("location", location)
            request.finish()
            return
        rest = b"/" + b"/".join(segments[cut:]) + (b"?" + query if query else b"")
        body = spooled_body(request)
        context_of(request).upstream_path = unquote(
            "/" + b"/".join(segments[cut:]).decode("latin-1"))
        if remote is not None:
            if key_refuses(request, context_of(request), "/".join(remote)):
                return
            await self._app.peers.forward(request, remote[0], rest, body,
                                          upstream_headers(request))
            return
        assert model_id is not None
        path = unquote("/" + b"/".join(segments[cut:]).decode("latin-1"))
        await pass_through(self._app, request, model_id, path, rest, body, query)


async def pass_through(app: App, request: Request, model_id: str, path: str, uri: bytes,
                       body: bytes | IBodyProducer | None, query: bytes) -> None:
    """A request for a local model's own server (``/upstream``, ``/comfyui``): refused (409)
    where it must not start the model (``llamaswap.passthrough``); a websocket upgrade is
    relayed as one (``web/tunnel.py``), anything else forwarded."""
    websocket = is_websocket_upgrade(request.requestHeaders)
    ready = app.processes[model_id].state is ModelState.READY
    why = refusal(app.config, model_id, ready, path, websocket)
    if why is not None:
        send_error(request, 409, why, code="model_not_loaded")
        return
    if websocket:
        await _websocket(app, request, model_id, uri)
        return
    streaming = b"stream=true" in query.lower()
    await proxy_to_model(app, request, model_id, uri, body, streaming=streaming,
                         headers=local_headers(app, request, model_id))


async def _websocket(app: App, request: Request, model_id: str, uri: bytes) -> None:
    """A websocket for a local model. With ``compat.ignoreWebsockets`` it stays outside
    the scheduler (it was only let through because the model is ready: it neither starts
    nor holds it); otherwise it holds the model, as a request in flight, until it closes."""
    if key_refuses(request, context_of(request), model_id):
        return
    headers = local_headers(app, request, model_id)
    if app.config.models[model_id].ignore_websockets:
        url = app.processes[model_id].model.proxy.rstrip("/") + uri.decode("latin-1")
        await relay_websocket(request, url, headers, app.forwarder.endpoint_for(url))
        return
    lease = await wait_for_model(app, request, model_id, False, False)
    if lease is None:
        return
    try:
        url = lease.process.model.proxy.rstrip("/") + uri.decode("latin-1")
        await relay_websocket(request, url, headers, app.forwarder.endpoint_for(url),
                              activity=lease.touch)
    finally:
        lease.release()


class ComfyUI(Endpoint):
    """``/comfyui/<path>``: the ``comfyui_auto`` model's own server, as llama-swap has it.
    Only ``/comfyui/`` itself may start it; ``/comfyui`` redirects there."""

    allow_subpaths = True

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app

    def render(self, request: Request) -> int:
        return run_async(request, self._handle)

    async def _handle(self, request: Request) -> None:
        raw_path, _, query = request.uri.partition(b"?")
        segments = raw_path.split(b"/")[1 + len(request.prepath or []):]  # below /comfyui
        if COMFYUI_MODEL not in self._app.config.models:
            send_error(request, 404, f"local model {COMFYUI_MODEL} not found",
                       code="model_not_found")
            return
        if not segments:  # /comfyui without a slash
            status = 301 if request.method in (b"GET", b"HEAD") else 308
            request.setResponseCode(status)
            request.setHeader("location", raw_path + b"/" + (b"?" + query if query else b""))
            request.finish()
            return
        path = unquote("/" + b"/".join(segments).decode("latin-1"))
        why = comfyui_refusal(path, self._app.processes[COMFYUI_MODEL].state
                              is ModelState.READY)
        if why is not None:
            send_error(request, 409, why, code="model_not_loaded")
            return
        rest = b"/" + b"/".join(segments) + (b"?" + query if query else b"")
        await pass_through(self._app, request, COMFYUI_MODEL, path, rest,
                           spooled_body(request), query)
