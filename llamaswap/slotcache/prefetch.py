"""Reading a model's slot files into the page cache while llama-server loads its weights.

A restore is llama-server reading the slot files; after a swap on a machine whose memory
went to other models, those files come from disk, after the model file did. Reading them
ahead, in a thread, while the model loads overlaps the two reads, so the restore finds
them in memory. It only ever reads (no data is kept), stops between chunks when cancelled,
and a failure costs nothing but the head start.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

CHUNK = 1 << 20
"""Bytes read at a time: a cancel is noticed within one chunk."""

Prefetcher = Callable[[Sequence[str]], Deferred[int]]
"""Starts reading files ahead; fires with the bytes read. Cancelling stops the reading."""


def read_ahead(paths: Sequence[str], cancelled: threading.Event, chunk: int = CHUNK) -> int:
    """Ask the kernel to read each file ahead (``POSIX_FADV_WILLNEED``), then read it
    through so it is in memory; return the bytes read. Blocking: run it in a thread."""
    total = 0
    buffer = bytearray(chunk)
    for path in paths:
        if cancelled.is_set():
            break
        with open(path, "rb", buffering=0) as f:
            advise = getattr(os, "posix_fadvise", None)
            if advise is not None:
                try:
                    advise(f.fileno(), 0, 0, os.POSIX_FADV_WILLNEED)
                except OSError:
                    pass  # only a hint; the reads below do the work
            while not cancelled.is_set():
                n = f.readinto(buffer)
                if not n:
                    break
                total += n
    return total


def thread_prefetcher(reactor: Any) -> Prefetcher:
    """A prefetcher that reads in the reactor's thread pool (never on the reactor thread)."""
    def prefetch(paths: Sequence[str]) -> Deferred[int]:
        cancelled = threading.Event()
        done: Deferred[int] = Deferred(lambda _: cancelled.set())
        reading = deferToThreadPool(reactor, reactor.getThreadPool(), read_ahead, list(paths),
                                    cancelled)

        def settle(result: Any) -> None:
            if done.called:
                return  # cancelled: the thread's late answer is dropped
            if isinstance(result, Failure):
                done.errback(result)
            else:
                done.callback(result)

        reading.addBoth(settle)
        return done

    return prefetch
