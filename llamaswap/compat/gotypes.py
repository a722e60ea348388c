"""Values as Go's ``encoding/json`` and ``fmt`` print them.

Clients decoding llama-swap's JSON into Go structs reject a float where an ``int`` is
declared, and read ``[]byte`` as base64; log parsers expect Go's duration notation.
"""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime


def go_time(seconds: float) -> str:
    """A Unix time as Go marshals a ``time.Time`` in UTC: RFC 3339 with the fraction's
    trailing zeros dropped (``2026-12-05T07:23:41.5Z``)."""
    micros = round(seconds * 1_000_000)
    whole, fraction = divmod(micros, 1_000_000)
    text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += "." + f"{fraction:06d}".rstrip("0")
    return text + "Z"


def parse_go_time(text: str) -> float:
    """RFC 3339 text (as Go's ``time.RFC3339`` parses it) -> Unix seconds; ``ValueError``
    if it is not RFC 3339."""
    value = text.strip()
    if len(value) < 20 or value[10] not in "Tt":
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    if value[-1] in "Zz":
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"not an RFC 3339 time (no zone): {text!r}")
    return parsed.timestamp()


def go_int(value: float | int | None, missing: int = 0) -> int:
    """A number as a Go ``int`` field holds it: truncated toward zero (as Go's conversion
    from a float), ``missing`` for an unknown or non-finite value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return int(value)


def go_float(value: float | int | None, missing: float = 0.0) -> float:
    """A number for a Go ``float64`` field (never NaN: JSON has no such value)."""
    if value is None or not math.isfinite(value):
        return missing
    return float(value)


def go_bytes(data: bytes | None) -> str | None:
    """A ``[]byte`` as ``encoding/json`` writes it: base64, ``null`` for a nil slice."""
    return None if data is None else base64.b64encode(data).decode("ascii")


def _decimal(units: int, digits: int) -> str:
    whole, rest = divmod(units, 10 ** digits)
    if not rest:
        return str(whole)
    return f"{whole}." + f"{rest:0{digits}d}".rstrip("0")


def go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration.String`` prints it: ``812.4µs``, ``1.5s``,
    ``1m30s``, ``1h0m0s``."""
    ns = round(seconds * 1_000_000_000)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_decimal(ns, 3)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_decimal(ns, 6)}ms"
    total_seconds, fraction = divmod(ns, 1_000_000_000)
    text = _decimal((total_seconds % 60) * 1_000_000_000 + fraction, 9) + "s"
    minutes = total_seconds // 60
    if minutes:
        text = f"{minutes % 60}m" + text
        hours = minutes // 60
        if hours:
            text = f"{hours}h" + text
    return sign + text
