"""Activity rows, pages and query parameters in llama-swap's shapes (``/api/metrics/*``).

llamaswap stores its own columns (``llamaswap.activity``); ``activity_entry`` presents a
row as llama-swap's ``ActivityLogEntry`` with llamaswap's extra figures beside it
(``method``, ``remote_ip``, ``ttfb_ms``, ``wait_ms``). Figures the upstream did not report
are ``-1`` where llama-swap uses ``-1`` (speeds, cached and draft tokens), ``0`` for token
counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from llamaswap.activity import SORTABLE, Query
from llamaswap.compat.gotypes import go_float, go_int, go_time, parse_go_time
from llamaswap.web.routes import MODEL_ROUTES

DEFAULT_LIMIT = 25

MODEL_PATHS = frozenset(route.path for route in MODEL_ROUTES)
"""The paths below llamaswap's root that name a model (``web.routes``)."""


def kept_in_activity(method: str, path: str) -> bool:
    """Whether a finished request becomes an activity row, as in llama-swap: only a POST,
    and through ``/upstream/<model>/`` only a POST to a model endpoint. A browser on a model
    server's own page (or llama-swap's UI loading a model with ``GET /upstream/<model>/``)
    fetches many things that are not inference and would bury the rows that are."""
    if method != "POST":
        return False
    if not path.startswith("/upstream/"):
        return True
    rest = path.partition("?")[0].rstrip("/")
    return any(rest.endswith(model_path) for model_path in MODEL_PATHS)


def model_dispatched(method: str, path: str) -> bool:
    """Whether ``method path`` (below ``/upstream/<model>``) is one of the model endpoints
    llamaswap serves itself (``web.routes``): what llama-swap tracks through ``/upstream``."""
    return any(route.path == path and method in route.methods for route in MODEL_ROUTES)


_NO_REQUEST_BODY = frozenset({"/v1/audio/voices", "/v1/audio/transcriptions",
                              "/v1/images/edits", "/sdapi/v1/img2img"})
_NO_RESPONSE_BODY = frozenset({"/v1/audio/speech", "/v1/images/generations",
                               "/v1/images/edits", "/sdapi/v1/txt2img", "/sdapi/v1/img2img"})


def captured_bodies(path: str) -> tuple[bool, bool]:
    """Whether a capture of a request for ``path`` keeps its request body and its response
    body: as in llama-swap, not the audio and image uploads or downloads (large binary
    data nobody reads in a capture); headers are always kept."""
    return path not in _NO_REQUEST_BODY, path not in _NO_RESPONSE_BODY


def _optional_ms(value: float | None) -> int | None:
    return None if value is None else go_int(value)


def activity_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    """One stored row as ``ActivityLogEntry`` (``error_msg`` only when there is one)."""
    entry: dict[str, Any] = {
        "id": int(row["id"]),
        "timestamp": go_time(row["ts"]),
        "model": row["model"],
        "req_path": row["endpoint"],
        "resp_content_type": row.get("content_type") or "",
        "resp_status_code": int(row["status"]),
        "tokens": {
            "cache_tokens": go_int(row.get("cached_tokens"), -1),
            "draft_tokens": go_int(row.get("draft_tokens"), -1),
            "draft_acc_tokens": go_int(row.get("draft_acc_tokens"), -1),
            "input_tokens": go_int(row.get("input_tokens")),
            "output_tokens": go_int(row.get("output_tokens")),
            "prompt_per_second": go_float(row.get("prompt_per_second"), -1.0),
            "tokens_per_second": go_float(row.get("tokens_per_second"), -1.0),
        },
        "duration_ms": go_int(row["duration_ms"]),
        "has_capture": bool(row.get("has_capture")),
    }
    if row.get("error"):
        entry["error_msg"] = row["error"]
    entry["method"] = row.get("method") or ""
    entry["remote_ip"] = row.get("client") or ""
    entry["ttfb_ms"] = _optional_ms(row.get("ttfb_ms"))
    entry["wait_ms"] = _optional_ms(row.get("wait_ms"))
    return entry


def total_pages(total: int, limit: int) -> int:
    return 0 if total <= 0 or limit <= 0 else math.ceil(total / limit)


def activity_page(rows: Sequence[Mapping[str, Any]], page: int, limit: int,
                  total: int) -> dict[str, Any]:
    """``ActivityPage``: ``data`` always a list, ``total_pages`` 0 when nothing matched."""
    return {"data": [activity_entry(r) for r in rows], "page": page, "limit": limit,
            "total": total, "total_pages": total_pages(total, limit)}


Args = Mapping[bytes, Sequence[bytes]]


def _text(args: Args, name: str) -> str:
    values = args.get(name.encode())
    return values[0].decode("utf-8", "replace").strip() if values else ""


def _time(args: Args, name: str) -> float | None:
    raw = _text(args, name)
    if not raw:
        return None
    try:
        return parse_go_time(raw)
    except ValueError:
        raise ValueError(f"invalid '{name}' timestamp, use RFC3339 format") from None


def _row_id(args: Args, name: str) -> int | None:
    raw = _text(args, name)
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be >= 1")
    return value


STATUS_FILTERS = ("2xx", "3xx", "4xx", "5xx", "error")
"""llamaswap's own ``status`` filter values (the web UI's status filter)."""


def parse_activity_query(args: Args) -> Query:
    """``/api/metrics/activity``'s parameters, checked as llama-swap checks them;
    ``ValueError`` with llama-swap's message for a bad one."""
    models = [m.decode("utf-8", "replace").strip() for m in args.get(b"model", [])]
    start, end = _time(args, "start"), _time(args, "end")
    if start is not None and end is not None and start > end:
        raise ValueError("start must be before end")
    min_id, max_id = _row_id(args, "min_id"), _row_id(args, "max_id")
    if min_id is not None and max_id is not None and min_id > max_id:
        raise ValueError("min_id must be <= max_id")
    limit = DEFAULT_LIMIT
    if raw := _text(args, "limit"):
        try:
            limit = int(raw)
        except ValueError:
            raise ValueError("invalid limit") from None
        if not 0 < limit < 1000:
            raise ValueError("limit must be between 1 and 999")
    page = 1
    if raw := _text(args, "page"):
        try:
            page = int(raw)
        except ValueError:
            page = 0
        if page < 1:
            raise ValueError("page must be >= 1")
    sort = _text(args, "sort") or "id"
    if sort not in SORTABLE:
        raise ValueError("invalid sort column")
    order = (_text(args, "order") or "desc").lower()
    if order not in ("asc", "desc"):
        raise ValueError("order must be asc or desc")
    status = (_text(args, "status") or "").lower()
    if status and status not in STATUS_FILTERS:
        raise ValueError("status must be one of " + ", ".join(STATUS_FILTERS))
    return Query(models=[m for m in models if m], page=page, limit=limit, sort=sort,
                 descending=order == "desc", start=start, end=end, min_id=min_id,
                 max_id=max_id, status=status, path=_text(args, "path") or "")
