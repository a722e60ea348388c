"""Reading slot files ahead: what the thread does, and that a cancel stops it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import CancelledError

from llamaswap.slotcache.prefetch import read_ahead, thread_prefetcher


def test_read_ahead_reads_every_file_through(tmp_path: Path) -> None:
    first, second = tmp_path / "slot-0.bin", tmp_path / "slot-1.bin"
    first.write_bytes(b"a" * 2500)
    second.write_bytes(b"b" * 10)
    assert read_ahead([str(first), str(second)], threading.Event(), chunk=1024) == 2510


def test_read_ahead_stops_when_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "slot-0.bin"
    path.write_bytes(b"a" * 10_000)
    cancelled = threading.Event()
    cancelled.set()
    assert read_ahead([str(path)], cancelled, chunk=1024) == 0


class _Pool:
    """A thread pool that runs nothing until the test says so."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], Callable[..., Any], tuple[Any, ...]]] = []

    def callInThreadWithCallback(self, on_result: Callable[..., Any],
                                 f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.calls.append((on_result, f, args))


class _Reactor:
    def __init__(self) -> None:
        self.pool = _Pool()

    def getThreadPool(self) -> _Pool:
        return self.pool

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        f(*args)


def test_the_reading_runs_in_the_thread_pool_and_a_cancel_stops_it(tmp_path: Path) -> None:
    path = tmp_path / "slot-0.bin"
    path.write_bytes(b"a" * 3000)
    reactor = _Reactor()
    done: list[Any] = []
    d = thread_prefetcher(reactor)([str(path)])
    d.addBoth(done.append)
    (on_result, f, args), = reactor.pool.calls
    assert done == []  # nothing read on the calling (reactor) thread
    paths, cancelled = args
    assert paths == [str(path)] and not cancelled.is_set()
    d.cancel()
    assert cancelled.is_set()  # the thread stops at its next chunk
    assert done[0].check(CancelledError)
    on_result(True, f(*args))  # the thread's late answer is ignored
    assert len(done) == 1


def test_the_bytes_read_are_the_result(tmp_path: Path) -> None:
    path = tmp_path / "slot-0.bin"
    path.write_bytes(b"a" * 3000)
    reactor = _Reactor()
    done: list[Any] = []
    thread_prefetcher(reactor)([str(path)]).addBoth(done.append)
    (on_result, f, args), = reactor.pool.calls
    on_result(True, f(*args))
    assert done == [3000]
