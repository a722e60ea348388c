"""``apiKeys``, as llama-swap has them: which requests need a key, and whether they brought one.

A key is accepted as a Basic-auth password, a Bearer token or an ``x-api-key`` header (the
order llama-swap reads them in). Comparison is constant-time against every configured key, so
neither timing nor the position of a key in the list leaks anything. Keys are never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Collection, Sequence

from twisted.web.server import Request

OPEN_PATHS = frozenset({"/health", "/wol-health", "/favicon.ico", "/"})
"""Reachable without a key (with GET/HEAD): health checks and the index page."""

CLIENT_KEY_HEADERS = (b"authorization", b"x-api-key")
REALM_CHALLENGE = 'Basic realm="llamaswap"'


def presented_keys(request: Request) -> list[str]:
    """Every key the request carries: Basic password, Bearer token, ``x-api-key``."""
    keys: list[str] = []
    for value in request.requestHeaders.getRawHeaders(b"authorization", []):
        scheme, _, credentials = value.strip().partition(b" ")
        credentials = credentials.strip()
        if scheme.lower() == b"basic":
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                continue
            keys.append(decoded.partition(b":")[2].decode("utf-8", "replace"))
        elif scheme.lower() == b"bearer":
            keys.append(credentials.decode("utf-8", "replace"))
    for value in request.requestHeaders.getRawHeaders(b"x-api-key", []):
        keys.append(value.strip().decode("utf-8", "replace"))
    return keys


def key_matches(candidate: str, keys: Sequence[str]) -> bool:
    """Constant-time membership: every configured key is compared, whatever matches."""
    wanted = candidate.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(wanted, key.encode())
    return found


def is_authorized(request: Request, keys: Sequence[str]) -> bool:
    return not keys or any(key_matches(k, keys) for k in presented_keys(request))


def matched_key(request: Request, keys: Sequence[str]) -> str | None:
    """The configured key the request carries, if any; every pair is compared in constant
    time, whatever matches, so which key matched does not show in the timing either."""
    found: str | None = None
    for candidate in presented_keys(request):
        wanted = candidate.encode()
        for key in keys:
            if hmac.compare_digest(wanted, key.encode()) and found is None:
                found = key
    return found


INFERENCE_PREFIXES = ("/upstream/",)
INFERENCE_PATHS = frozenset({"/v1/models", "/models"})


def scope_refusal(scope: str, path: str, model_paths: Collection[str]) -> str | None:
    """Why a key of ``scope`` may not use ``path`` (``None``: it may).

    Inference is the model endpoints, the model lists and ``/upstream/``; management is the
    rest (unload, reload, logs, events, metrics, activity, the UI...).
    """
    if scope == "all":
        return None
    inference = (path.rstrip("/") in model_paths or path.rstrip("/") in INFERENCE_PATHS
                 or path.startswith(INFERENCE_PREFIXES))
    if scope == "inference" and not inference:
        return "this API key may only be used for inference, not for management endpoints"
    if scope == "management" and inference:
        return "this API key may only be used for management endpoints, not for inference"
    return None


OPEN_PREFIXES = ("/ui/",)
"""Static files open to GET/HEAD: the web UI's pages hold no data and ask for the key
themselves (every API call they make still needs it)."""


def needs_key(path: str, method: bytes) -> bool:
    """Whether a request must carry a key (when keys are configured). Preflights never do."""
    if method == b"OPTIONS":
        return False
    if method not in (b"GET", b"HEAD"):
        return True
    return not (path in OPEN_PATHS or path == "/ui" or path.startswith(OPEN_PREFIXES))
