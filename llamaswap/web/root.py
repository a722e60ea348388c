"""The root of the HTTP API: the gate every request passes before its endpoint.

``build_root`` assembles the tree from each module's routes: adding an endpoint is one line
in ``models.model_routes``, ``management.management_routes``, ``observe.observe_routes`` or
``compat_api.compat_routes``.
Building the tree creates resources only: nothing is started, attached or scheduled.
"""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from llamaswap.context import context_of
from llamaswap.web import auth, cors
from llamaswap.web.app import App
from llamaswap.web.base import Endpoint, Node, mount_all
from llamaswap.web.compat_api import compat_routes
from llamaswap.web.errors import send_error
from llamaswap.web.limits import body_length, limit_message
from llamaswap.web.management import management_routes
from llamaswap.web.models import model_routes
from llamaswap.web.observe import observe_routes
from llamaswap.web.redirect import redirect
from llamaswap.web.routes import MODEL_ROUTES, api_of_path
from llamaswap.web.ui import mount_ui

MODEL_PATHS_ALL = frozenset(route.path for route in MODEL_ROUTES)
"""Every model endpoint's path: what an inference-scoped API key may use."""


def build_root(app: App) -> Root:
    """The resource tree; mount it as a Site's root or under a path of your own tree."""
    root = Root(app)
    mount_all(root, model_routes(app))
    mount_all(root, management_routes(app))
    mount_all(root, observe_routes(app))
    mount_all(root, compat_routes(app))
    mount_ui(root)
    return root


class Root(Node):
    """The gate: it answers CORS preflights, checks API keys and the request size, picks the
    error shape (Anthropic's on Anthropic endpoints), and records how deep it is mounted, so
    paths forwarded upstream are relative to llamaswap even when an application mounts it
    under ``/llm/``."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app
        self.index: Resource = Index()

    @property
    def max_request_size(self) -> int:
        """Read by ``limits.BodyLimitMixin`` requests to reject big bodies early."""
        return self._app.config.max_request_size

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        config = self._app.config
        context = context_of(request)
        context.depth = len(request.prepath or []) - 1
        below = "/" + b"/".join([path, *(request.postpath or [])]).decode("latin-1")
        context.api = api_of_path(below)
        if request.method == b"OPTIONS":
            return _Preflight()
        keys = config.api_keys
        if keys and auth.needs_key(below, request.method):
            key = auth.matched_key(request, keys)
            if key is None:
                return _Refusal(401, "unauthorized: invalid or missing API key",
                                "unauthorized", {"www-authenticate": auth.REALM_CHALLENGE})
            scope = config.api_key_scopes.get(key)
            if scope is not None:
                refusal = auth.scope_refusal(scope.scope, below, MODEL_PATHS_ALL)
                if refusal is not None:
                    return _Refusal(403, refusal, "forbidden")
                context.allowed_models = scope.models
        if body_length(request.content) > config.max_request_size:
            return _Refusal(413, limit_message(config.max_request_size), "request_too_large")
        child: Resource = super().getChildWithDefault(path, request)
        return child

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and not request.postpath:
            return self.index
        return super().getChild(path, request)


class Index(Endpoint):
    """``GET /``: to the web UI, as llama-swap."""

    def handle_GET(self, request: Request) -> None:
        redirect(request, b"/ui")


class _Preflight(Endpoint):
    allow_subpaths = True

    def render(self, request: Request) -> int:
        cors.answer_preflight(request)
        return NOT_DONE_YET


class _Refusal(Endpoint):
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
