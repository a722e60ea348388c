"""The SQLite activity store (on its own thread), histograms and the capture cache."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from llamaswap.activity import ActivityStore, CaptureCache, Query, histogram, percentile


def row(model: str, **extra: Any) -> dict[str, Any]:
    return {"ts": 1.0, "model": model, "endpoint": "/v1/chat/completions", "method": "POST",
            "status": 200, "duration_ms": 10.0, **extra}


async def started(path: str | None = None, max_rows: int = 100) -> ActivityStore:
    store = ActivityStore(reactor, path, max_rows)
    store.startService()
    return store


def batch_sizes(store: ActivityStore) -> list[int]:
    """The number of rows in each batch the store writes from now on."""
    batches: list[int] = []
    original = store._insert

    def spy(rows: list[dict[str, Any]]) -> list[int]:
        batches.append(len(rows))
        return original(rows)

    store._insert = spy  # type: ignore[method-assign]
    return batches


@pytest_twisted.ensureDeferred
async def test_rows_are_written_off_the_reactor_thread_paged_and_filtered() -> None:
    store = await started()
    threads: list[str] = []
    original = store._insert

    def spy(rows: list[dict[str, Any]]) -> list[int]:
        threads.append(threading.current_thread().name)
        return original(rows)

    store._insert = spy  # type: ignore[method-assign]
    try:
        ids = [await store.add(row("a" if i % 2 else "b", output_tokens=i)) for i in range(7)]
        assert ids == [1, 2, 3, 4, 5, 6, 7]
        assert threading.current_thread().name not in threads
        assert set(threads) == {threads[0]}  # one dedicated thread
        page = await store.page(Query(page=1, limit=3))
        assert [r["id"] for r in page["data"]] == [7, 6, 5]
        assert (page["total"], page["total_pages"]) == (7, 3)
        page = await store.page(Query(models=["a"], page=2, limit=2))
        assert [r["id"] for r in page["data"]] == [2]  # a: 6, 4 | 2
        assert page["total"] == 3 and all(r["model"] == "a" for r in page["data"])
        page = await store.page(Query(sort="generated", descending=False, limit=2))
        assert [r["output_tokens"] for r in page["data"]] == [0, 1]
        assert page["data"][0]["has_capture"] is False
    finally:
        await store.stopService()


@pytest_twisted.ensureDeferred
async def test_rows_added_while_a_write_is_on_the_thread_go_in_one_batch() -> None:
    store = await started()
    batches = batch_sizes(store)
    try:
        pending = [store.add(row("m", output_tokens=i)) for i in range(6)]
        ids = [await d for d in pending]
        assert ids == [1, 2, 3, 4, 5, 6]  # every caller gets its own row, in order
        assert batches == [1, 5]  # the first write went at once, the rest waited for it
        page = await store.page(Query(sort="generated", descending=False, limit=10))
        assert [r["output_tokens"] for r in page["data"]] == [0, 1, 2, 3, 4, 5]
    finally:
        await store.stopService()


@pytest_twisted.ensureDeferred
async def test_a_batch_waits_for_the_write_interval_and_a_read_sends_what_waits() -> None:
    store = ActivityStore(reactor, None, 100, write_interval=3600.0)
    store.startService()
    batches = batch_sizes(store)
    try:
        assert await store.add(row("m", output_tokens=0)) == 1  # nothing before it: at once
        waiting = [store.add(row("m", output_tokens=i)) for i in (1, 2)]
        assert batches == [1] and not any(d.called for d in waiting)  # within the interval
        page = await store.page(Query(sort="generated", descending=False, limit=10))
        assert [r["output_tokens"] for r in page["data"]] == [0, 1, 2]  # sent for the read
        assert batches == [1, 2] and [await d for d in waiting] == [2, 3]
        late = store.add(row("m", output_tokens=3))
        assert not late.called
        await store.stopService()  # what waits is written before the store closes
        assert await late == 4 and batches == [1, 2, 1]
    finally:
        if store.running:
            await store.stopService()


@pytest_twisted.ensureDeferred
async def test_a_failed_batch_fails_every_row_in_it_and_the_next_batch_still_runs() -> None:
    store = await started()
    original = store._insert
    calls = 0

    def flaky(rows: list[dict[str, Any]]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("disk full")
        return original(rows)

    store._insert = flaky  # type: ignore[method-assign]
    try:
        first = store.add(row("m"))
        failing = [store.add(row("m")), store.add(row("m"))]
        assert await first == 1
        for d in failing:
            with pytest.raises(RuntimeError, match="disk full"):
                await d
        assert await store.add(row("m")) == 2
    finally:
        await store.stopService()


@pytest_twisted.ensureDeferred
async def test_the_row_cap_drops_the_oldest_rows() -> None:
    store = await started(max_rows=3)
    try:
        for i in range(5):
            await store.add(row("a", output_tokens=i))
        page = await store.page(Query())
        assert [r["id"] for r in page["data"]] == [5, 4, 3]
    finally:
        await store.stopService()


@pytest_twisted.ensureDeferred
async def test_a_file_store_survives_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "activity.db")
    store = await started(path)
    await store.add(row("a", input_tokens=5))
    await store.stopService()
    store = await started(path)
    try:
        assert await store.add(row("a")) == 2
        page = await store.page(Query())
        assert [r["input_tokens"] for r in page["data"]] == [None, 5]
    finally:
        await store.stopService()


@pytest_twisted.ensureDeferred
async def test_per_model_stats() -> None:
    store = await started()
    try:
        for speed in (10.0, 20.0, 30.0):
            await store.add(row("a", input_tokens=5, output_tokens=50, tokens_per_second=speed,
                                ttfb_ms=100.0))
        await store.add(row("a", status=500))
        await store.add(row("b", input_tokens=1, output_tokens=2, cached_tokens=1))
        stats = await store.stats()
        a, b = stats["models"]["a"], stats["models"]["b"]
        assert (a["total_requests"], a["errors"], a["total_input_tokens"],
                a["total_output_tokens"]) == (4, 1, 15, 150)
        assert a["gen_histogram"]["p50"] == 20.0 and a["ttfb_ms"]["max"] == 100.0
        assert b["gen_histogram"] is None and b["total_cache_tokens"] == 1
        assert (stats["total_requests"], stats["total_output_tokens"]) == (5, 152)
        assert stats["gen_histogram"]["p50"] == 20.0  # over every model's rows
        assert stats["prompt_histogram"] is None
        only_b = await store.stats(["b"])
        assert list(only_b["models"]) == ["b"]
    finally:
        await store.stopService()


def test_histogram_follows_llama_swap() -> None:
    assert histogram([]) is None
    assert histogram([0, -1]) is None
    h = histogram([float(v) for v in range(1, 101)])
    assert h is not None
    assert len(h["bins"]) == 8  # Sturges: ceil(log2(100)) + 1
    assert sum(h["bins"]) == 100
    assert (h["min"], h["max"]) == (1.0, 100.0)
    assert h["p50"] == pytest.approx(50.5)
    assert h["p99"] == pytest.approx(99.01)
    assert all(isinstance(b, int) for b in h["bins"])
    same = histogram([5.0, 5.0, 5.0])  # all equal: one bin, binSize 0 (as llama-swap)
    assert same == {"bins": [3], "min": 5.0, "max": 5.0, "binSize": 0.0, "p50": 5.0,
                    "p95": 5.0, "p99": 5.0}
    assert percentile([1.0, 2.0], 0.5) == 1.5


def test_capture_cache_is_fifo_within_its_budget() -> None:
    cache = CaptureCache(budget=100)
    assert cache.put(1, {"n": 1}, 40)
    assert cache.put(2, {"n": 2}, 40)
    assert cache.put(3, {"n": 3}, 40)  # evicts 1
    assert 1 not in cache and cache.get(2) == {"n": 2} and 3 in cache
    assert not cache.put(4, {"n": 4}, 101)  # bigger than the whole budget: not kept
    assert 2 in cache and 3 in cache


def test_stopping_a_store_that_never_started_does_not_wait_forever() -> None:
    store = ActivityStore(reactor, None, 10)
    done: list[object] = []
    store.stopService().addBoth(done.append)
    assert done == [None]


def test_a_large_batch_is_inserted_in_order_with_consecutive_ids() -> None:
    """Batches go in as multi-row INSERTs of at most ROWS_PER_INSERT rows (one statement,
    one release of the GIL, per chunk): ids and values must come out as row by row."""
    store = ActivityStore(reactor, None, 1000)
    store._open()
    try:
        rows = [row(f"m{i % 7}", output_tokens=i, error=None if i % 2 else "x")
                for i in range(1, 1201)]
        assert store._insert(rows) == list(range(1, 1201))
        page = store._select(Query(sort="id", descending=False, limit=1000))
        assert page["total"] == 1000  # cut to the row cap after the batch
        first = page["data"][0]
        assert (first["id"], first["model"], first["output_tokens"]) == (201, "m5", 201)
        assert [r["output_tokens"] for r in page["data"]] == list(range(201, 1201))
        assert store._insert([row("late")]) == [1201]
    finally:
        store._close()


def test_rows_beyond_the_backlog_are_dropped_not_queued(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """Memory stays bounded when rows come faster than the store's thread writes them."""
    from llamaswap import activity

    monkeypatch.setattr(activity, "MAX_PENDING", 3)
    store = ActivityStore(reactor, None, 100)  # never started: the first batch stays out
    added = [store.add(row("m")) for _ in range(6)]  # 1 on its way, 3 waiting, 2 dropped
    failures: list[Any] = []
    for d in added[4:]:
        d.addErrback(failures.append)
    assert [f.check(activity.StoreBusy) for f in failures] == [activity.StoreBusy] * 2
    assert not any(d.called for d in added[:4])
    assert len(store._pending) == 3


@pytest_twisted.ensureDeferred
async def test_pages_are_bounded_by_time_and_id_and_sort_by_llama_swap_keys() -> None:
    store = await started()
    try:
        for i in range(1, 6):
            await store.add(row("m", ts=float(i * 100), content_type="text/event-stream",
                                draft_tokens=10 - i))
        page = await store.page(Query(start=200.0, end=400.0))
        assert [r["id"] for r in page["data"]] == [4, 3, 2]
        page = await store.page(Query(min_id=2, max_id=3, sort="drafted", descending=False))
        assert [r["draft_tokens"] for r in page["data"]] == [7, 8]
        assert page["data"][0]["content_type"] == "text/event-stream"
    finally:
        await store.stopService()


def test_a_store_file_from_an_older_llamaswap_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3
    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE activity (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, "
        "model TEXT NOT NULL, endpoint TEXT NOT NULL, method TEXT NOT NULL, "
        "status INTEGER NOT NULL, duration_ms REAL NOT NULL, ttfb_ms REAL, wait_ms REAL, "
        "input_tokens INTEGER, output_tokens INTEGER, cached_tokens INTEGER, "
        "prompt_per_second REAL, tokens_per_second REAL, client TEXT, error TEXT, "
        "has_capture INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO activity (ts, model, endpoint, method, status, duration_ms) "
        "VALUES (1.0, 'm', '/v1/completions', 'POST', 200, 5.0);")
    old.commit()
    old.close()
    store = ActivityStore(reactor, path, 100)
    store._open()
    try:
        store._insert([row("m", content_type="application/json")])
        page = store._select(Query(sort="id", descending=False))
        assert [(r["id"], r["content_type"]) for r in page["data"]] == [
            (1, None), (2, "application/json")]
    finally:
        store._close()


@pytest_twisted.ensureDeferred
async def test_a_row_for_a_request_that_ends_after_shutdown_is_refused_quietly() -> None:
    """A request still finishing while the service stops must not reach a closed store."""
    from llamaswap import activity

    store = await started()
    assert await store.add(row("m")) == 1
    await store.stopService()
    late: list[Any] = []
    store.add(row("m")).addErrback(late.append)
    assert [f.check(activity.StoreClosed) for f in late] == [activity.StoreClosed]


def test_a_batch_that_reaches_a_closed_store_fails_with_store_closed() -> None:
    from llamaswap import activity

    store = ActivityStore(reactor, None, 10)  # never opened: _db is None
    with pytest.raises(activity.StoreClosed):
        store._insert([row("m")])


@pytest_twisted.ensureDeferred
async def test_pages_filter_by_status_class_and_path_on_the_server() -> None:
    """The web UI's status and path filters are applied by the store, so a page is full."""
    store = await started()
    try:
        for status, endpoint, error in ((200, "/v1/chat/completions", None),
                                        (404, "/v1/embeddings", "model not found"),
                                        (200, "/v1/Embeddings", None),
                                        (502, "/v1/chat/completions", "upstream"),
                                        (200, "/upstream/m/props", "cancelled")):
            await store.add(row("m", status=status, endpoint=endpoint, error=error))
        ids = lambda page: [r["id"] for r in page["data"]]  # noqa: E731
        assert ids(await store.page(Query(status="2xx"))) == [5, 3, 1]
        assert ids(await store.page(Query(status="5xx"))) == [4]
        assert ids(await store.page(Query(status="error"))) == [5, 4, 2]
        assert ids(await store.page(Query(path="EMBED"))) == [3, 2]
        page = await store.page(Query(status="2xx", path="embed", limit=1))
        assert (ids(page), page["total"]) == ([3], 1)
    finally:
        await store.stopService()


def test_status_and_path_query_parameters_are_read_and_checked() -> None:
    from llamaswap.compat.activity import parse_activity_query

    query = parse_activity_query({b"status": [b"4XX"], b"path": [b" /v1/chat "]})
    assert (query.status, query.path) == ("4xx", "/v1/chat")
    with pytest.raises(ValueError, match="status must be one of"):
        parse_activity_query({b"status": [b"teapot"]})
