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
from urllib.parse import parse_qs, unquote

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from llamaswap.logs import get_logger
from llamaswap.policy import ModelState
from llamaswap.process import StartError
from llamaswap.router import ConcurrencyLimitExceeded, ModelUnloaded, ShuttingDown
from llamaswap.web.errors import json_bytes, send_error
from llamaswap.web.forward import UpstreamUnavailable
from llamaswap.web.relay import UpstreamBroke

if TYPE_CHECKING:
    from llamaswap.service import LlamaSwapService

log = get_logger()

MODEL_PATHS = (
    b"/v1/chat/completions", b"/v1/completions", b"/v1/embeddings", b"/v1/rerank",
    b"/rerank", b"/v1/reranking", b"/reranking",
)

Handler = Callable[[Request], Awaitable[None] | None]


class BadRequest(Exception):
    """The client's request cannot be understood; answered with 400 before anything starts."""


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


def read_body(request: Request) -> bytes:
    return request.content.read() if request.content is not None else b""


def relative_uri(request: Request) -> bytes:
    """The request's raw URI (escaping and query kept) below llamaswap's mount point."""
    depth = getattr(request, "llamaswap_depth", 0)
    if not depth:
        return request.uri
    raw_path, sep, query = request.uri.partition(b"?")
    return b"/" + b"/".join(raw_path.split(b"/")[1 + depth:]) + sep + query


def parse_model_request(request: Request, body: bytes) -> tuple[str, dict[str, Any] | None]:
    """The requested model name and, for JSON bodies, the decoded object.

    JSON is recognised by its content type or, when the type is missing or the form type
    ``curl -d`` sends by default, by its first character. Malformed JSON is a ``BadRequest``.
    """
    content_type = (request.getHeader("content-type") or "").lower()
    stripped = body.lstrip()
    looks_json = stripped[:1] in (b"{", b"[")
    if "json" in content_type or (looks_json and not content_type.startswith("multipart/")):
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"request body is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise BadRequest("request body must be a JSON object")
        model = data.get("model")
        if not isinstance(model, str) or not model.strip():
            raise BadRequest("missing or invalid 'model' key in request body")
        return model.strip(), data
    if content_type.startswith("application/x-www-form-urlencoded"):
        fields = parse_qs(body.decode("latin-1"))
        if fields.get("model"):
            return fields["model"][0].strip(), None
    query_model = request.args.get(b"model")
    if query_model and query_model[0].strip():
        return query_model[0].decode("utf-8", "replace").strip(), None
    raise BadRequest("missing or invalid 'model' key in request body")


class ModelEndpoint(_Endpoint):
    """POST with the model named in the body: the swap, then the streaming proxy."""

    def __init__(self, app: LlamaSwapService) -> None:
        super().__init__()
        self._app = app

    async def handle_POST(self, request: Request) -> None:
        body = read_body(request)
        try:
            requested, data = parse_model_request(request, body)
        except BadRequest as e:
            send_error(request, 400, str(e), code="invalid_request_body")
            return
        model_id = self._app.config.resolve(requested)
        request.llamaswap_model = requested  # type: ignore[attr-defined]
        if model_id is None:
            send_error(request, 404, f"model '{requested}' not found", code="model_not_found")
            return
        rename = self._app.config.models[model_id].use_model_name
        if rename and data is not None:
            data["model"] = rename
            body = json.dumps(data).encode()
        await proxy_to_model(self._app, request, model_id, relative_uri(request), body)


async def proxy_to_model(app: LlamaSwapService, request: Request, model_id: str,
                         upstream_uri: bytes, body: bytes | None) -> None:
    """Wait for ``model_id`` to be ready (its turn, a swap), then relay the request."""
    request.llamaswap_model = model_id  # type: ignore[attr-defined]
    try:
        lease = await app.router.acquire(model_id)
    except ConcurrencyLimitExceeded as e:
        send_error(request, 429, str(e), code="concurrency_limit", headers={"retry-after": "1"})
        return
    except StartError as e:
        send_error(request, 500, str(e), code="model_start_failed")
        return
    except (ModelUnloaded, ShuttingDown) as e:
        send_error(request, 503, str(e), headers={"retry-after": "1"})
        return
    try:
        url = lease.process.model.proxy.rstrip("/") + upstream_uri.decode("latin-1")
        await app.forwarder.forward(request, url, body)
    except UpstreamUnavailable as e:
        send_error(request, 502, f"model {model_id} did not answer: {e}",
                   code="upstream_unavailable")
    except UpstreamBroke as e:
        log.warn("{model}: response cut off: {why}", model=model_id, why=str(e))
    finally:
        lease.release()


class Upstream(_Endpoint):
    """``/upstream/<model>/<path>``: any method, straight to that model's server.

    Model IDs may contain slashes, so the longest configured name that prefixes the path
    wins; the rest of the path is forwarded with its percent-encoding untouched.
    """

    allow_subpaths = True

    def __init__(self, app: LlamaSwapService) -> None:
        super().__init__()
        self._app = app

    def render(self, request: Request) -> int:
        return run_async(request, self._handle)

    async def _handle(self, request: Request) -> None:
        raw_path, _, query = request.uri.partition(b"?")
        segments = raw_path.split(b"/")[1 + len(request.prepath or []):]  # below /upstream
        for cut in range(len(segments), 0, -1):
            name = unquote(b"/".join(segments[:cut]).decode("latin-1"))
            model_id = self._app.config.resolve(name) if name else None
            if model_id is not None:
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
        body = read_body(request)
        if not body and request.method in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
            body_or_none: bytes | None = None
        else:
            body_or_none = body
        await proxy_to_model(self._app, request, model_id, rest, body_or_none)


# -- listings and management ---------------------------------------------------------------


class ModelList(_Endpoint):
    """``GET /v1/models`` in llama-swap's shape (§3.4)."""

    def __init__(self, app: LlamaSwapService) -> None:
        super().__init__()
        self._app = app

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
        records.sort(key=lambda r: r["id"])
        origin = request.getHeader("origin")
        if origin:
            request.setHeader("access-control-allow-origin", origin)
        send_json(request, {"object": "list", "data": records})


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
                            "description": model.description, "pid": process.pid,
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
    root = _RootNode()
    model_endpoint = ModelEndpoint(app)
    for path in MODEL_PATHS:
        mount(root, path, model_endpoint)
    models = ModelList(app)
    mount(root, b"/v1/models", models)
    mount(root, b"/models", models)
    mount(root, b"/upstream", Upstream(app))
    mount(root, b"/running", Running(app))
    mount(root, b"/unload", UnloadAll(app))
    mount(root, b"/api/models/unload", ApiUnload(app))
    mount(root, b"/health", Health())
    root.index = Index()
    return root


class _RootNode(_Node):
    """The tree's root; remembers how deep it is mounted, so paths forwarded upstream are
    relative to llamaswap even when an application mounts it under ``/llm/``."""

    index: Resource | None = None

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        request.llamaswap_depth = len(request.prepath or []) - 1  # type: ignore[attr-defined]
        return super().getChildWithDefault(path, request)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and self.index is not None and not request.postpath:
            return self.index
        return super().getChild(path, request)


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

