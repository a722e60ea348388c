"""The HTTP API as a ``twisted.web`` resource tree (llama-swap reference §3.2–3.5).

Each endpoint is a small leaf resource. Asynchronous handlers run as coroutines started by
``_Endpoint.render``; a client that disconnects cancels the coroutine, which withdraws its
place in the queue or stops the upstream request, wherever it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from llamaswap.logs import get_logger
from llamaswap.peers import Peers
from llamaswap.policy import ModelState
from llamaswap.selectors import Disabled, NoTarget, Rewriter
from llamaswap.web import auth, cors
from llamaswap.web.errors import json_bytes, send_error
from llamaswap.web.forward import UpstreamUnavailable, upstream_headers
from llamaswap.web.limits import body_length, limit_message
from llamaswap.web.modelrequest import IN_MEMORY_LIMIT, BadRequest, ModelRequest, extract
from llamaswap.web.multipart import stream_file
from llamaswap.web.relay import UpstreamBroke
from llamaswap.web.routes import MODEL_ROUTES, ModelRoute, api_of_path
from llamaswap.web.unanswered import may_replay, replay_wait
from llamaswap.web.waiting import loading_state_applies, wait_for_model

if TYPE_CHECKING:
    from llamaswap.service import LlamaSwapService

log = get_logger()

Handler = Callable[[Request], Awaitable[None] | None]



MODEL_PATHS_ALL = frozenset(route.path for route in MODEL_ROUTES)
"""Every model endpoint's path: what an inference-scoped API key may use."""

class _Node(Resource):
    """An inner node of the tree: unknown children get a JSON 404, not an HTML page."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        return _NotFound()


class _Endpoint(Resource):
    """A leaf answering ``handle_<METHOD>``; a path with extra segments is a 404."""

    isLeaf = True
    allow_subpaths = False

    def render(self, request: Request) -> bytes | int:
        if not self.allow_subpaths and request.postpath not in ([], [b""]):
            return _NotFound().render(request)
        method = request.method.decode("ascii", "replace")
        handler = getattr(self, f"handle_{method}", None)
        if handler is None and method == "HEAD":
            handler = getattr(self, "handle_GET", None)
        if handler is None:
            allowed = sorted(n[len("handle_"):] for n in dir(self) if n.startswith("handle_"))
            send_error(request, 405, f"method {method} not allowed on this path",
                       headers={"allow": ", ".join(allowed)})
            return NOT_DONE_YET
        return run_async(request, handler)


def run_async(request: Request, handler: Handler) -> int:
    """Run ``handler`` as a coroutine; the client leaving cancels it; errors become 500s."""
    result = handler(request)
    if result is None:
        return NOT_DONE_YET
    d: Deferred[None] = Deferred.fromCoroutine(result)  # type: ignore[arg-type]

    def client_gone(_: Failure) -> None:
        request._llamaswap_gone = True  # type: ignore[attr-defined]
        d.cancel()

    if not d.called:
        # Not for a handler that already answered (a 404, a 400): twisted.web would never
        # fire the notification, which would hold the request in a cycle with this closure.
        request.notifyFinish().addErrback(client_gone)
    d.addErrback(_unexpected, request)
    return NOT_DONE_YET


def _unexpected(failure: Failure, request: Request) -> None:
    if failure.check(CancelledError):
        return
    log.failure("error handling {method} {path}", failure,
                method=request.method.decode("ascii", "replace"),
                path=request.path.decode("latin-1"))
    send_error(request, 500, "internal error in llamaswap; see its log")


class _NotFound(_Endpoint):
    allow_subpaths = True

    def render(self, request: Request) -> int:
        send_error(request, 404, f"no such endpoint: {request.path.decode('latin-1')}")
        return NOT_DONE_YET


def send_json(request: Request, value: object, status: int = 200) -> None:
    body = json_bytes(value)
    request.setResponseCode(status)
    request.setHeader("content-type", "application/json")
    request.setHeader("content-length", str(len(body)))
    request.write(body)
    request.finish()


def send_text(request: Request, text: str, status: int = 200) -> None:
    body = text.encode()
    request.setResponseCode(status)
    request.setHeader("content-type", "text/plain; charset=utf-8")
    request.setHeader("content-length", str(len(body)))
    request.write(body)
    request.finish()


# -- model requests ------------------------------------------------------------------------


def relative_uri(request: Request) -> bytes:
    """The request's raw URI (escaping and query kept) below llamaswap's mount point."""
    depth = getattr(request, "llamaswap_depth", 0)
    if not depth:
        return request.uri
    raw_path, sep, query = request.uri.partition(b"?")
    return b"/" + b"/".join(raw_path.split(b"/")[1 + depth:]) + sep + query


def local_headers(app: LlamaSwapService, request: Request, model_id: str) -> Headers:
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
        return request.content.read()
    return stream_file(request.content, length)


def _parent_getChild(self: Resource, path: bytes, request: Request) -> Resource:
    """``getChild`` of an endpoint that also has children: itself for a trailing slash."""
    if path == b"" and not request.postpath:
        return self
    return _NotFound()


class ModelEndpoint(_Endpoint):
    """A model route (``routes.MODEL_ROUTES``): find the model, then serve it locally
    (swap, streaming proxy) or through a peer (straight through, no swap)."""

    def __init__(self, app: LlamaSwapService, route: ModelRoute, peers: Peers,
                 names: Rewriter) -> None:
        super().__init__()
        self._app = app
        self._route = route
        self._peers = peers
        self._names = names

    isLeaf = False  # /v1/messages has a child: /v1/messages/count_tokens
    getChild = _parent_getChild

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
        request.llamaswap_model = wanted.requested  # type: ignore[attr-defined]
        uri = relative_uri(request)
        prefix = self._route.strip_prefix.encode()
        if prefix and uri.startswith(prefix + b"/"):
            uri = uri[len(prefix):]
        streaming = (wanted.data.get("stream") is True if wanted.data is not None
                     else request.args.get(b"stream") == [b"true"])
        as_sent = wanted.requested
        try:
            # Profile pin, then selector: the body's model becomes the name served.
            wanted.requested, release = self._names.rewrite(as_sent)
        except Disabled as e:
            send_error(request, 404, str(e), code="model_not_found")
            return
        except NoTarget as e:
            send_error(request, 503, str(e), headers={"retry-after": "1"})
            return
        try:
            await self._dispatch(request, wanted, as_sent, uri, streaming)
        finally:
            release()

    async def _dispatch(self, request: Request, wanted: ModelRequest, as_sent: str,
                        uri: bytes, streaming: bool) -> None:
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
        request.llamaswap_model = f"{peer_id}/{peer_model}"  # type: ignore[attr-defined]
        if key_refuses(request, f"{peer_id}/{peer_model}"):
            return
        rename = peer_model if as_sent != peer_model else ""
        body, uri = wanted.upstream(uri, rename, config.peers[peer_id].filters)
        await self._peers.forward(request, peer_id, uri, body, upstream_headers(request))


def key_refuses(request: Request, model: str) -> bool:
    """Answer 403 if the request's API key is limited to other models (``apiKeys[].models``;
    such a key may use local models only)."""
    allowed = getattr(request, "llamaswap_allowed_models", None)
    if allowed is None or model in allowed:
        return False
    send_error(request, 403, f"this API key may not use model {model}", code="forbidden")
    return True


async def proxy_to_model(app: LlamaSwapService, request: Request, model_id: str,
                         upstream_uri: bytes, body: bytes | IBodyProducer | None,
                         streaming: bool = False, headers: Headers | None = None) -> None:
    """Wait for ``model_id`` to be ready (its turn, a swap), then relay the request.

    ``streaming``: the client asked for an event stream, so it may be kept informed while
    it waits (``web/waiting.py``).
    """
    request.llamaswap_model = model_id  # type: ignore[attr-defined]
    if key_refuses(request, model_id):
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


class Upstream(_Endpoint):
    """``/upstream/<model>/<path>``: any method, straight to that model's server.

    Model IDs may contain slashes, so the longest configured name that prefixes the path
    wins; the rest of the path is forwarded with its percent-encoding untouched.
    """

    allow_subpaths = True

    def __init__(self, app: LlamaSwapService, peers: Peers, names: Rewriter) -> None:
        super().__init__()
        self._app = app
        self._peers = peers
        self._names = names

    def render(self, request: Request) -> int:
        return run_async(request, self._handle)

    def _resolve(self, name: str) -> tuple[str | None, tuple[str, str] | None]:
        """A path prefix -> local model or peer model, after the active profile's pins."""
        if not name:
            return None, None
        try:
            name = self._names.pinned(name)
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
        if remote is not None:
            request.llamaswap_model = "/".join(remote)  # type: ignore[attr-defined]
            if key_refuses(request, "/".join(remote)):
                return
            await self._peers.forward(request, remote[0], rest, body, upstream_headers(request))
            return
        assert model_id is not None
        streaming = b"stream=true" in query.lower()
        await proxy_to_model(self._app, request, model_id, rest, body, streaming=streaming,
                             headers=local_headers(self._app, request, model_id))


# -- listings and management ---------------------------------------------------------------


class ModelList(_Endpoint):
    """``GET /v1/models`` in llama-swap's shape (§3.4)."""

    def __init__(self, app: LlamaSwapService, names: Rewriter) -> None:
        super().__init__()
        self._app = app
        self._names = names

    def handle_GET(self, request: Request) -> None:
        config = self._app.config
        created = int(time.time())
        records = []
        for model in sorted(config.models.values(), key=lambda m: m.id):
            if model.unlisted:
                continue
            state = self._app.processes[model.id].state
            status = "unloaded" if state is ModelState.STOPPED else "loaded"
            record: dict[str, Any] = {"id": model.id, "object": "model", "created": created,
                                      "owned_by": "llamaswap"}
            if model.name:
                record["name"] = model.name
            if model.description:
                record["description"] = model.description
            meta = {**dict(model.metadata), "type": "model", "aliases": list(model.aliases)}
            record["meta"] = {"llamaswap": meta}
            record["status"] = {"value": status}
            records.append(record)
            if config.include_aliases_in_list:
                for alias in model.aliases:
                    records.append({**record, "id": alias, "meta": {"llamaswap": {
                        "type": "alias", "modelID": model.id}}})
        for peer in config.peers.values():
            for name in peer.models:
                records.append({"id": f"{peer.id}/{name}", "object": "model",
                                "created": created, "owned_by": "llamaswap",
                                "name": f"{peer.id}: {name}",
                                "meta": {"llamaswap": {"type": "peer", "peerID": peer.id}},
                                "status": {"value": "unloaded"}})
        records += self._virtual_records(created)
        pins = self._names.pins()
        records = [r for r in records if not (r["id"] in pins and pins[r["id"]] is None)]
        records.sort(key=lambda r: r["id"])
        origin = request.getHeader("origin")
        if origin:
            request.setHeader("access-control-allow-origin", origin)
        send_json(request, {"object": "list", "data": records})


    def _virtual_records(self, created: int) -> list[dict[str, Any]]:
        """Listed selectors, and the active profile's pins that name nothing else."""
        records: list[dict[str, Any]] = []
        for selector in self._app.config.selectors.values():
            if selector.unlisted:
                continue
            meta: dict[str, Any] = {**dict(selector.metadata), "type": "selector",
                                    "strategy": selector.strategy,
                                    "targets": list(selector.targets)}
            if selector.strategy == "spillover":
                meta["spillover"] = selector.spillover
            record: dict[str, Any] = {"id": selector.id, "object": "model",
                                      "created": created, "owned_by": "llamaswap"}
            if selector.name:
                record["name"] = selector.name
            if selector.description:
                record["description"] = selector.description
            record["meta"] = {"llamaswap": meta}
            record["status"] = {"value": self._names.selector_status(selector)}
            records.append(record)
        config = self._app.config
        for requested, target in self._names.pins().items():
            if target is None or config.resolve(requested) or config.resolve_peer(requested) \
                    or requested in config.selectors:
                continue
            records.append({"id": requested, "object": "model", "created": created,
                            "owned_by": "llamaswap", "name": "",
                            "meta": {"llamaswap": {"type": "profile", "target": target}},
                            "status": {"value": "unloaded"}})
        return records


class Profiles(_Endpoint):
    """``GET /api/profiles``: the profiles and which one is active."""

    isLeaf = False  # /api/profiles/active is its child
    getChild = _parent_getChild

    def __init__(self, names: Rewriter) -> None:
        super().__init__()
        self._names = names

    def handle_GET(self, request: Request) -> None:
        profiles = [{"id": p.name, "description": p.description,
                     "pins": {k: v or "" for k, v in p.pins.items()}}
                    for p in sorted(self._names.profiles.values(), key=lambda p: p.name)]
        send_json(request, {"active": self._names.active_profile, "profiles": profiles})


class ActiveProfile(_Endpoint):
    """``PUT /api/profiles/active`` with ``{"name": "x"}`` or ``{"name": null}``."""

    def __init__(self, names: Rewriter) -> None:
        super().__init__()
        self._names = names

    def handle_PUT(self, request: Request) -> None:
        try:
            data = json.loads(request.content.read() if request.content else b"")
        except ValueError:
            send_error(request, 400, "invalid profile request")
            return
        if not isinstance(data, dict) or "name" not in data:
            send_error(request, 400, "profile name is required")
            return
        name = data["name"]
        if name is not None and not isinstance(name, str):
            send_error(request, 400, "profile name must be a string or null")
            return
        if name is not None and name not in self._names.profiles:
            send_error(request, 404, f'profile "{name}" not found')
            return
        self._names.active_profile = name
        log.info("active profile: {name}", name=name or "(none)")
        send_json(request, {"active": name})


class Running(_Endpoint):
    def __init__(self, app: LlamaSwapService) -> None:
        super().__init__()
        self._app = app

    def handle_GET(self, request: Request) -> None:
        running = []
        for model_id, process in sorted(self._app.processes.items()):
            if process.state is ModelState.STOPPED:
                continue
            model = process.model
            running.append({"model": model_id, "state": process.state.value,
                            "cmd": " ".join(model.cmd), "proxy": model.proxy,
                            "ttl": model.ttl, "name": model.name,
                            "description": model.description,
                            "pid": process.model_pid or process.pid,
                            "inFlight": self._app.router.in_flight(model_id)})
        send_json(request, {"running": running})


class UnloadAll(_Endpoint):
    """``GET /unload``: stop every model, answer once they are stopped."""

    def __init__(self, app: LlamaSwapService) -> None:
        super().__init__()
        self._app = app

    async def handle_GET(self, request: Request) -> None:
        await self._app.router.unload()
        send_text(request, "OK")


class ConfigReload(_Endpoint):
    """``POST /api/config/reload``: re-read the config file and apply it without downtime.

    400 with every problem if the new file is invalid (the running config stays); otherwise
    what changed per model (``llamaswap.reload``).
    """

    def __init__(self, app: LlamaSwapService) -> None:
        super().__init__()
        self._app = app

    def handle_POST(self, request: Request) -> None:
        from llamaswap.config import ConfigError
        try:
            changes = self._app.reload()
        except ConfigError as e:
            send_error(request, 400, "the new configuration was refused; the running one "
                       "stays in effect: " + "; ".join(e.problems), code="invalid_config")
            return
        send_json(request, {"msg": "ok", "changes": changes})


class ApiUnload(_Endpoint):
    """``POST /api/models/unload`` (all) and ``/api/models/unload/<model>`` (one)."""

    allow_subpaths = True

    def __init__(self, app: LlamaSwapService) -> None:
        super().__init__()
        self._app = app

    async def handle_POST(self, request: Request) -> None:
        name = unquote("/".join(s.decode("latin-1") for s in request.postpath or []).strip("/"))
        if not name:
            await self._app.router.unload()
            send_json(request, {"msg": "ok"})
            return
        model_id = self._app.config.resolve(name)
        if model_id is None:
            send_error(request, 404, f"model '{name}' not found", code="model_not_found")
            return
        await self._app.router.unload([model_id])
        send_text(request, "OK")


class Health(_Endpoint):
    def handle_GET(self, request: Request) -> None:
        send_text(request, "OK")


class Index(_Endpoint):
    def handle_GET(self, request: Request) -> None:
        send_text(request, "llamaswap: OpenAI-compatible model swapper.\n"
                           "GET /v1/models lists models; GET /running shows what is loaded.\n")


def build_root(app: LlamaSwapService) -> Resource:
    """The resource tree; mount it as a Site's root or under a path of your own tree."""
    peers = Peers(app.config.peers, app.reactor)
    peers.setServiceParent(app)  # its connection pools close when llamaswap stops
    names = Rewriter(app.config.selectors, app.config.profiles, _state_of(app))
    root = _RootNode(app, peers, names)
    for route in MODEL_ROUTES:
        mount(root, route.path.encode(), ModelEndpoint(app, route, peers, names))
    models = ModelList(app, names)
    mount(root, b"/v1/models", models)
    mount(root, b"/models", models)
    mount(root, b"/upstream", Upstream(app, peers, names))
    mount(root, b"/api/profiles", Profiles(names))
    mount(root, b"/api/profiles/active", ActiveProfile(names))
    mount(root, b"/running", Running(app))
    mount(root, b"/unload", UnloadAll(app))
    mount(root, b"/api/models/unload", ApiUnload(app))
    mount(root, b"/api/config/reload", ConfigReload(app))
    mount(root, b"/health", Health())
    from llamaswap.web.observe import mount_observability  # they import this module
    from llamaswap.web.ui import mount_ui
    mount_observability(root, app)
    mount_ui(root)
    root.index = Index()
    return root


def _state_of(app: LlamaSwapService) -> Callable[[str], str]:
    """A selector target's state: its local model's, or ``remote`` for a peer model."""

    def state_of(name: str) -> str:
        model_id = app.config.resolve(name)
        return app.processes[model_id].state.value if model_id else "remote"

    return state_of


class _RootNode(_Node):
    """The tree's root: the gate every request passes before its endpoint.

    It answers CORS preflights, checks API keys and the request size, picks the error shape
    (Anthropic's on Anthropic endpoints), and remembers how deep it is mounted, so paths
    forwarded upstream are relative to llamaswap even when an application mounts it under
    ``/llm/``.
    """

    index: Resource | None = None

    def __init__(self, app: LlamaSwapService, peers: Peers, names: Rewriter) -> None:
        super().__init__()
        self._app = app
        self._peers = peers
        self._names = names
        self._config = app.config
        self.max_request_size = app.config.max_request_size
        """Read by ``limits.BodyLimitMixin`` requests to reject big bodies early."""

    def _follow_reload(self) -> None:
        """The app's config was reloaded: peers, selectors, profiles and the limit follow."""
        config = self._config = self._app.config
        self.max_request_size = config.max_request_size
        self._peers.reconfigure(config.peers)
        self._names.reconfigure(config.selectors, config.profiles)

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        if self._app.config is not self._config:
            self._follow_reload()
        request.llamaswap_depth = len(request.prepath or []) - 1  # type: ignore[attr-defined]
        below = "/" + b"/".join([path, *(request.postpath or [])]).decode("latin-1")
        request.llamaswap_api = api_of_path(below)  # type: ignore[attr-defined]
        if request.method == b"OPTIONS":
            return _Preflight()
        keys = self._app.config.api_keys
        if keys and auth.needs_key(below, request.method):
            key = auth.matched_key(request, keys)
            if key is None:
                return _Refusal(401, "unauthorized: invalid or missing API key",
                                "unauthorized", {"www-authenticate": auth.REALM_CHALLENGE})
            scope = self._app.config.api_key_scopes.get(key)
            if scope is not None:
                refusal = auth.scope_refusal(scope.scope, below, MODEL_PATHS_ALL)
                if refusal is not None:
                    return _Refusal(403, refusal, "forbidden")
                request.llamaswap_allowed_models = scope.models  # type: ignore[attr-defined]
        if body_length(request.content) > self.max_request_size:
            return _Refusal(413, limit_message(self.max_request_size), "request_too_large")
        return super().getChildWithDefault(path, request)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and self.index is not None and not request.postpath:
            return self.index
        return super().getChild(path, request)


class _Preflight(_Endpoint):
    allow_subpaths = True

    def render(self, request: Request) -> int:
        cors.answer_preflight(request)
        return NOT_DONE_YET


class _Refusal(_Endpoint):
    """Answers any request below it with one error: the root's refusals (401, 403, 413)."""

    allow_subpaths = True

    def __init__(self, status: int, message: str, code: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__()
        self._answer = (status, message, code, headers)

    def render(self, request: Request) -> int:
        status, message, code, headers = self._answer
        send_error(request, status, message, code=code, headers=headers)
        return NOT_DONE_YET


def mount(root: Resource, path: bytes, leaf: Resource) -> None:
    """Put ``leaf`` at ``path``, creating JSON-404 inner nodes on the way."""
    *parents, last = path.strip(b"/").split(b"/")
    node = root
    for segment in parents:
        child = node.children.get(segment)
        if child is None:
            child = _Node()
            node.putChild(segment, child)
        node = child
    node.putChild(last, leaf)

