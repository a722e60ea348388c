"""llama-swap's management API types, transcribed from its UI (``ui/src/lib/types.ts``) and
server structs (``internal/server``, ``internal/store``, ``internal/hw``, ``internal/perf``),
with a checker that a JSON document decodes into them.

JSON types are checked as a Go client decodes them: an ``int`` field must be a JSON integer
(``1966.6`` is refused), a ``float64`` field any number, a ``[]byte`` field base64 text or
``null``, a ``time.Time`` RFC 3339 text. Fields the types do not name (llamaswap's extras)
are allowed; ``optional`` fields are Go's ``omitempty`` ones.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class Scalar:
    name: str


INT = Scalar("int")
NUMBER = Scalar("number")
STR = Scalar("string")
BOOL = Scalar("bool")
TIME = Scalar("time")
BYTES = Scalar("bytes")
"""Go ``[]byte``: base64 text, or ``null`` for a nil slice."""


@dataclass(frozen=True)
class Nullable:
    inner: Any


@dataclass(frozen=True)
class ListOf:
    inner: Any


@dataclass(frozen=True)
class MapOf:
    inner: Any


@dataclass(frozen=True)
class OneOf:
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Obj:
    required: dict[str, Any]
    optional: dict[str, Any] = field(default_factory=dict)


def problems(value: Any, schema: Any, where: str = "$") -> list[str]:
    """Every way ``value`` fails to decode as ``schema`` (empty: it decodes)."""
    if isinstance(schema, Nullable):
        return [] if value is None else problems(value, schema.inner, where)
    if isinstance(schema, OneOf):
        return [] if value in schema.values else [f"{where}: {value!r} not in {schema.values}"]
    if isinstance(schema, Scalar):
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "string": isinstance(value, str),
            "bool": isinstance(value, bool),
            "time": isinstance(value, str) and bool(RFC3339.match(value)),
            "bytes": value is None or (isinstance(value, str) and _is_base64(value)),
        }[schema.name]
        return [] if ok else [f"{where}: {value!r} is not a JSON {schema.name}"]
    if isinstance(schema, ListOf):
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not a list"]
        return [p for i, v in enumerate(value) for p in problems(v, schema.inner, f"{where}[{i}]")]
    if isinstance(schema, MapOf):
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not an object"]
        return [p for k, v in value.items() for p in problems(v, schema.inner, f"{where}.{k}")]
    if isinstance(schema, Obj):
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not an object"]
        found = [f"{where}: missing {name!r}" for name in schema.required if name not in value]
        for name, inner in (*schema.required.items(), *schema.optional.items()):
            if name in value:
                found += problems(value[name], inner, f"{where}.{name}")
        return found
    raise TypeError(f"unknown schema {schema!r}")


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def assert_decodes(value: Any, schema: Any) -> None:
    found = problems(value, schema)
    assert not found, "\n".join(found)


TOKEN_METRICS = Obj({"cache_tokens": INT, "draft_tokens": INT, "draft_acc_tokens": INT,
                     "input_tokens": INT, "output_tokens": INT,
                     "prompt_per_second": NUMBER, "tokens_per_second": NUMBER})
ACTIVITY_LOG_ENTRY = Obj(
    {"id": INT, "timestamp": TIME, "model": STR, "req_path": STR, "resp_content_type": STR,
     "resp_status_code": INT, "tokens": TOKEN_METRICS, "duration_ms": INT, "has_capture": BOOL},
    {"error_msg": STR, "metadata": MapOf(STR)})
ACTIVITY_PAGE = Obj({"data": ListOf(ACTIVITY_LOG_ENTRY), "page": INT, "limit": INT,
                     "total": INT, "total_pages": INT})
HISTOGRAM = Obj({"bins": ListOf(INT), "min": NUMBER, "max": NUMBER, "binSize": NUMBER,
                 "p50": NUMBER, "p95": NUMBER, "p99": NUMBER})
ACTIVITY_STATS = Obj({"total_requests": INT, "total_input_tokens": INT,
                      "total_output_tokens": INT, "total_cache_tokens": INT,
                      "prompt_histogram": Nullable(HISTOGRAM),
                      "gen_histogram": Nullable(HISTOGRAM)})
REQ_RESP_CAPTURE = Obj({"id": INT, "req_path": STR, "req_headers": Nullable(MapOf(STR)),
                        "req_body": BYTES, "resp_headers": Nullable(MapOf(STR)),
                        "resp_body": BYTES})
INFLIGHT_ENTRY = Obj(
    {"id": STR, "timestamp": TIME, "model": STR, "req_path": STR, "method": STR,
     "req_headers": MapOf(STR), "remote_ip": STR, "resp_headers": MapOf(STR),
     "resp_bytes": INT, "elapsed_ms": INT},
    {"client_received_at_ms": INT, "metadata": MapOf(STR)})
INFLIGHT_SNAPSHOT = Obj({"operation": OneOf(("snapshot",)),
                         "requests": ListOf(INFLIGHT_ENTRY)})
INFLIGHT_UPSERT = Obj({"operation": OneOf(("upsert",)), "request": INFLIGHT_ENTRY})
INFLIGHT_REMOVE = Obj({"operation": OneOf(("remove",)), "id": STR})
UI_CONFIG = Obj({"activity": Obj({"session_id": ListOf(STR)})})
API_MODEL = Obj({"id": STR, "name": STR, "description": STR, "state": STR, "unlisted": BOOL,
                 "peerID": STR},
                {"aliases": ListOf(STR), "capabilities": MapOf(BOOL), "context_length": INT})
LOG_DATA = Obj({"source": OneOf(("proxy", "upstream")), "data": STR})
ACTIVITY_EVENT = Obj({"id": INT})
PROFILE_CHANGED = Obj({"active": Nullable(STR)})
EVENT_ENVELOPE = Obj({"type": OneOf(("modelStatus", "logData", "activity", "inflight",
                                     "uiConfig", "profileChanged", "perfsys", "perfgpu",
                                     "queue")),
                      "data": STR})
"""``queue`` is llamaswap's own event type; llama-swap's UI ignores types it does not know."""
VERSION_INFO = Obj({"version": STR, "commit": STR, "build_date": STR})
NET_IO = Obj({"name": STR, "bytes_recv": INT, "bytes_sent": INT})
SYS_STAT = Obj({"timestamp": TIME, "cpu_util_per_core": ListOf(NUMBER), "mem_total_mb": INT,
                "mem_used_mb": INT, "mem_free_mb": INT, "swap_total_mb": INT,
                "swap_used_mb": INT, "load_avg_1": NUMBER, "load_avg_5": NUMBER,
                "load_avg_15": NUMBER, "net_io": ListOf(NET_IO)})
GPU_STAT = Obj({"timestamp": TIME, "id": INT, "name": STR, "uuid": STR, "temp_c": INT,
                "vram_temp_c": INT, "gpu_util_pct": NUMBER, "mem_util_pct": NUMBER,
                "mem_used_mb": INT, "mem_total_mb": INT, "fan_speed_pct": NUMBER,
                "power_draw_w": NUMBER})
PERFORMANCE = Obj({"enabled": BOOL, "sys_stats": ListOf(SYS_STAT),
                   "gpu_stats": ListOf(GPU_STAT)})
_NSTR = Nullable(STR)
_NINT = Nullable(INT)
HARDWARE_SNAPSHOT = Obj({
    "schema_version": INT, "captured_at": TIME,
    "capture": Obj({"scope": OneOf(("inference_host",)),
                    "method": OneOf(("detected", "detected_and_edited", "manual")),
                    "detector": Nullable(Obj({"name": STR, "version": STR}))}),
    "architecture": Obj({"name": STR, "raw_name": _NSTR}),
    "operating_system": Obj({"family": STR, "name": _NSTR, "version": _NSTR,
                             "kernel": _NSTR}, {"raw_family": _NSTR}),
    "environment": Obj({"kind": STR, "name": _NSTR, "version": _NSTR}, {"raw_kind": _NSTR}),
    "cpu": Obj({"vendor": _NSTR, "model": _NSTR, "socket_count": _NINT,
                "physical_core_count": _NINT, "logical_thread_count": _NINT}),
    "memory": Obj({"capacity_bytes": INT}),
    "accelerators": ListOf(Obj({
        "index": INT, "kind": OneOf(("gpu", "npu", "other")), "vendor": _NSTR,
        "model": _NSTR, "architecture": _NSTR,
        "memory": Obj({"kind": OneOf(("dedicated", "unified", "shared_system", "unknown")),
                       "capacity_bytes": _NINT}),
        "driver": Nullable(Obj({"name": _NSTR, "version": _NSTR})),
        "power_limit_watts": Nullable(NUMBER)}, {"raw_kind": _NSTR})),
})
MSG_OK = Obj({"msg": OneOf(("ok",))})
ERROR_ENVELOPE = Obj({"error": Obj({"message": STR})})
