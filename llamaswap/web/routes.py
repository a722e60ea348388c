"""Every model endpoint llamaswap serves, in one table (llama-swap's, plus a few extras).

The README's endpoint table is written from this one; ``web.models.model_routes`` mounts it.
``model_from`` says where the model name is normally found; extraction itself is generic
(JSON, multipart, urlencoded form, query string), as in llama-swap.
"""

from __future__ import annotations

from dataclasses import dataclass

from llamaswap.web.anthropic import ANTHROPIC_API


@dataclass(frozen=True)
class ModelRoute:
    path: str
    methods: tuple[str, ...] = ("POST",)
    model_from: str = "json"
    """``json`` (the body's ``model``), ``multipart`` (a ``model`` form field) or ``query``."""
    strip_prefix: str = ""
    """Removed from the path sent upstream (``/v/chat/completions`` -> ``/chat/completions``)."""
    api: str = "openai"
    """Whose error shape llamaswap's own errors take: ``openai`` or ``anthropic``."""


_JSON_PATHS = (
    "/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/embeddings",
    "/v1/rerank", "/v1/reranking", "/rerank", "/reranking", "/infill", "/completion",
    "/v1/audio/speech", "/v1/images/generations", "/sdapi/v1/txt2img", "/sdapi/v1/img2img",
)
_VERSIONLESS = (
    "chat/completions", "responses", "completions", "embeddings", "rerank", "reranking",
)

MODEL_ROUTES: tuple[ModelRoute, ...] = (
    *(ModelRoute(path) for path in _JSON_PATHS),
    ModelRoute("/v1/messages", api=ANTHROPIC_API),
    ModelRoute("/v1/messages/count_tokens", api=ANTHROPIC_API),
    ModelRoute("/audioapi/v1/tasks/run", strip_prefix="/audioapi"),
    *(ModelRoute(f"/v/{rest}", strip_prefix="/v") for rest in _VERSIONLESS),
    ModelRoute("/v/messages", strip_prefix="/v", api=ANTHROPIC_API),
    ModelRoute("/v/messages/count_tokens", strip_prefix="/v", api=ANTHROPIC_API),
    ModelRoute("/v1/audio/transcriptions", model_from="multipart"),
    ModelRoute("/v1/audio/translations", model_from="multipart"),
    ModelRoute("/v1/images/edits", model_from="multipart"),
    ModelRoute("/v1/images/variations", model_from="multipart"),
    ModelRoute("/v1/audio/voices", methods=("GET", "POST"), model_from="query"),
    ModelRoute("/props", methods=("GET",), model_from="query"),
    ModelRoute("/sdapi/v1/loras", methods=("GET",), model_from="query"),
)

ANTHROPIC_PATHS = frozenset(r.path for r in MODEL_ROUTES if r.api == ANTHROPIC_API)


def api_of_path(path: str) -> str:
    """The API family of a request path below llamaswap's root (for its error shape)."""
    return ANTHROPIC_API if path.rstrip("/") in ANTHROPIC_PATHS else "openai"
