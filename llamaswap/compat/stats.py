"""Speed histograms as llama-swap's activity page draws them.

Sturges' rule for the bin count, kept within 5..20; percentiles interpolated linearly
between the sorted values; values that are not positive (speed not reported) left out.
All values equal: one bin holding them all, ``binSize`` 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

MIN_BINS = 5
MAX_BINS = 20


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Linear-interpolated percentile of sorted values (``fraction`` in 0..1)."""
    if not ordered:
        return 0.0
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def histogram(values: Iterable[float | None]) -> dict[str, Any] | None:
    """``HistogramData`` (``bins`` integers, the rest floats), or ``None`` with no data."""
    ordered = sorted(float(v) for v in values if v is not None and v > 0)
    if not ordered:
        return None
    low, high = ordered[0], ordered[-1]
    p50, p95, p99 = (percentile(ordered, p) for p in (0.50, 0.95, 0.99))
    if low == high:
        return {"bins": [len(ordered)], "min": low, "max": high, "binSize": 0.0,
                "p50": p50, "p95": p95, "p99": p99}
    count = min(MAX_BINS, max(MIN_BINS, math.ceil(math.log2(len(ordered))) + 1))
    size = (high - low) / count
    bins = [0] * count
    for value in ordered:
        bins[min(math.floor((value - low) / size), count - 1)] += 1
    return {"bins": bins, "min": low, "max": high, "binSize": size,
            "p50": p50, "p95": p95, "p99": p99}
