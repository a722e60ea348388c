"""Garbage-collector settings for a llamaswap process of its own (the twistd plugin).

Every proxied request leaves reference cycles behind (Deferreds, failures, requests and their
channels), so CPython's cyclic collector runs every 700 allocations, and now and then scans
the whole heap: modules, the config, everything that lives as long as the process. Measured
with ``gc.callbacks`` under ``wrk``, that was ~10% of llamaswap's CPU. Once started, llamaswap
moves what exists into the permanent generation (``gc.freeze``: never scanned again) and lets
the young generation grow to 7,000 objects between collections: about 15% less CPU per small
request and 5-10% per stream (``bench/run.py``'s ``proxy CPU ms`` rows, alternating runs).
Memory stays bounded: cycles are still collected, only less often.

Applied only by the twistd plugin: an application embedding ``LlamaSwapService`` owns its
process and its collector.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 7000
OLDER_THRESHOLDS = (10, 10)


def tune_for_serving() -> None:
    """Call once start-up is done (imports made, config loaded, services started)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
