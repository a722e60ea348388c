"""The activity history: one SQLite row per finished model request.

SQLite (standard library) runs on one dedicated thread, so the reactor never waits for a
disk and the connection is only ever used by the thread that opened it. Inserts are group
committed: rows that arrive while a write is on the thread go in the next one, as one
transaction, so a busy proxy makes one thread hop per batch rather than per request (per
request it cost a third of a CPU at 1,000 requests/s), and a batch is one multi-row INSERT
per 500 rows (``_insert``). The table is cut to a row cap after each batch. Rows waiting for
the thread are bounded (``MAX_PENDING``): beyond, new rows are dropped and the log says
so, rather than memory growing. ``CaptureCache`` keeps request and response bodies in
memory, oldest first out, within a byte budget.
"""

from __future__ import annotations

import functools
import math
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from llamaswap.logs import get_logger
from llamaswap.redaction import redact_url

T = TypeVar("T")

COLUMNS = ("id", "ts", "model", "endpoint", "method", "status", "duration_ms", "ttfb_ms",
           "wait_ms", "input_tokens", "output_tokens", "cached_tokens", "prompt_per_second",
           "tokens_per_second", "client", "error", "has_capture")
_INSERTED = COLUMNS[1:]
ROWS_PER_INSERT = 500
"""Rows in one INSERT: SQLite's default limit for a VALUES list."""
MAX_PENDING = 20_000
"""Rows waiting for the store's thread beyond which new ones are dropped."""


class StoreBusy(Exception):
    """The row was dropped: too many were already waiting to be written."""


@functools.lru_cache(maxsize=32)
def _insert_sql(rows: int) -> str:
    one = "(" + ", ".join("?" for _ in _INSERTED) + ")"
    return f"INSERT INTO activity ({', '.join(_INSERTED)}) VALUES " + ", ".join([one] * rows)


def _values(row: Mapping[str, Any]) -> list[Any]:
    """A row's values in column order; columns it lacks get their defaults."""
    return [row.get(c, False if c == "has_capture" else None) for c in _INSERTED]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS activity (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    method TEXT NOT NULL,
    status INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    ttfb_ms REAL,
    wait_ms REAL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cached_tokens INTEGER,
    prompt_per_second REAL,
    tokens_per_second REAL,
    client TEXT,
    error TEXT,
    has_capture INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS activity_model ON activity (model, id DESC);
"""

SORTABLE = {"id": "id", "time": "id", "model": "model", "endpoint": "endpoint",
            "status": "status", "duration": "duration_ms", "ttfb": "ttfb_ms",
            "prompt": "input_tokens", "generated": "output_tokens",
            "prompt_speed": "prompt_per_second", "gen_speed": "tokens_per_second"}
MAX_PAGE_SIZE = 999


@dataclass(frozen=True)
class Query:
    models: Sequence[str] = ()
    page: int = 1
    limit: int = 25
    sort: str = "id"
    descending: bool = True


class ActivityStore(Service):
    """Rows in, pages and per-model stats out; every call returns a ``Deferred``."""

    log = get_logger()

    def __init__(self, reactor: Any, path: str | None, max_rows: int) -> None:
        self._reactor = reactor
        self.path = path
        self.max_rows = max_rows
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="llamaswap-activity")
        self._db: sqlite3.Connection | None = None
        self._shutdown_trigger: Any = None
        self._pending: list[tuple[dict[str, Any], Deferred[int]]] = []
        self._writing = False
        self._dropped = 0

    def startService(self) -> None:
        super().startService()
        self._pool.start()
        # A store that is never stopped (an embedding app that forgets) must not keep the
        # process alive: its thread is not a daemon, so stop it when the reactor stops.
        self._shutdown_trigger = self._reactor.addSystemEventTrigger(
            "during", "shutdown", self._pool.stop)
        self._run(self._open).addErrback(
            lambda f: self.log.failure("cannot open the activity store {path}", f,
                                       path=self.path or ":memory:"))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        trigger, self._shutdown_trigger = self._shutdown_trigger, None
        if trigger is not None:
            try:
                self._reactor.removeSystemEventTrigger(trigger)
            except (ValueError, KeyError):
                pass
        if not self._pool.started:  # never started, or stopped already
            return succeed(None)
        d = self._run(self._close)
        d.addErrback(lambda f: self.log.failure("closing the activity store", f))
        d.addBoth(lambda _: self._pool.stop())
        return d

    def _run(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, work, *args)

    # -- on the store's thread --------------------------------------------------------------

    def _open(self) -> None:
        db = sqlite3.connect(self.path or ":memory:", check_same_thread=False)
        db.execute("PRAGMA busy_timeout=5000")
        if self.path:
            db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _insert(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert ``rows`` in order; their ids.

        One statement per ``ROWS_PER_INSERT`` rows, not one per row: the sqlite3 module
        lets go of the GIL for every statement it runs, and taking it back from a busy
        reactor thread can take a whole switch interval (5 ms). Row by row, that capped
        this thread at a few hundred rows a second under load while requests came faster,
        and the rows waiting for it grew without bound (~1 KB per request).
        """
        assert self._db is not None, "the activity store is not open"
        ids: list[int] = []
        db = self._db
        with db:
            for start in range(0, len(rows), ROWS_PER_INSERT):
                chunk = rows[start:start + ROWS_PER_INSERT]
                values = [value for row in chunk for value in _values(row)]
                # One writer, AUTOINCREMENT: a statement's rows get consecutive ids.
                last = int(db.execute(_insert_sql(len(chunk)), values).lastrowid or 0)
                ids.extend(range(last - len(chunk) + 1, last + 1))
            db.execute("DELETE FROM activity WHERE id <= ?", (ids[-1] - self.max_rows,))
        return ids

    def _select(self, query: Query) -> dict[str, Any]:
        assert self._db is not None, "the activity store is not open"
        where, params = _where(query.models)
        total = self._db.execute(f"SELECT COUNT(*) FROM activity{where}", params).fetchone()[0]
        column = SORTABLE.get(query.sort, "id")
        order = "DESC" if query.descending else "ASC"
        rows = self._db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM activity{where} "
            f"ORDER BY {column} {order}, id {order} LIMIT ? OFFSET ?",
            [*params, query.limit, (query.page - 1) * query.limit]).fetchall()
        return {"data": [_row(r) for r in rows], "page": query.page, "limit": query.limit,
                "total": total, "total_pages": max(1, math.ceil(total / query.limit))}

    def _stats(self, models: Sequence[str]) -> dict[str, Any]:
        assert self._db is not None, "the activity store is not open"
        where, params = _where(models)
        per_model = {}
        for model, count, inputs, outputs, cached, errors, duration in self._db.execute(
                "SELECT model, COUNT(*), SUM(input_tokens), SUM(output_tokens), "
                "SUM(cached_tokens), SUM(status >= 400), AVG(duration_ms) "
                f"FROM activity{where} GROUP BY model ORDER BY model", params):
            speeds = [r[0] for r in self._db.execute(
                "SELECT tokens_per_second FROM activity WHERE model = ? "
                "AND tokens_per_second > 0", (model,))]
            prompt_speeds = [r[0] for r in self._db.execute(
                "SELECT prompt_per_second FROM activity WHERE model = ? "
                "AND prompt_per_second > 0", (model,))]
            ttfbs = [r[0] for r in self._db.execute(
                "SELECT ttfb_ms FROM activity WHERE model = ? AND ttfb_ms IS NOT NULL",
                (model,))]
            per_model[model] = {
                "total_requests": count, "errors": errors or 0,
                "total_input_tokens": inputs or 0, "total_output_tokens": outputs or 0,
                "total_cache_tokens": cached or 0, "avg_duration_ms": duration,
                "gen_histogram": histogram(speeds), "prompt_histogram": histogram(prompt_speeds),
                "ttfb_ms": histogram(ttfbs)}
        totals = {key: sum(m[key] for m in per_model.values()) for key in (
            "total_requests", "errors", "total_input_tokens", "total_output_tokens",
            "total_cache_tokens")}
        return {**totals, "models": per_model}

    # -- on the reactor ---------------------------------------------------------------------

    def add(self, row: dict[str, Any]) -> Deferred[int]:
        """Store one finished request; fires with its row id, or fails with ``StoreBusy``
        when ``MAX_PENDING`` rows are already waiting (the store says so in the log)."""
        if len(self._pending) >= MAX_PENDING:
            if not self._dropped:
                self.log.warn("activity store: {count} rows waiting to be written; new rows "
                              "are dropped until they are", count=len(self._pending))
            self._dropped += 1
            return fail(StoreBusy())
        d: Deferred[int] = Deferred()
        self._pending.append((row, d))
        if not self._writing:
            self._write_pending()
        return d

    def _write_pending(self) -> None:
        batch, self._pending = self._pending, []
        self._writing = True

        def written(ids: list[int]) -> None:
            for (_, d), row_id in zip(batch, ids, strict=True):
                d.callback(row_id)

        def failed(failure: Failure) -> None:
            for _, d in batch:
                d.errback(failure)

        def next_batch(_: object) -> None:
            self._writing = False
            if self._dropped and len(self._pending) < MAX_PENDING // 2:
                self.log.warn("activity store: recording again ({count} rows were dropped)",
                              count=self._dropped)
                self._dropped = 0
            if self._pending:
                self._write_pending()

        d = self._run(self._insert, [row for row, _ in batch])
        d.addCallbacks(written, failed)
        d.addBoth(next_batch)

    def page(self, query: Query) -> Deferred[dict[str, Any]]:
        """``{"data", "page", "limit", "total", "total_pages"}`` as llama-swap answers."""
        return self._run(self._select, query)

    def stats(self, models: Sequence[str] = ()) -> Deferred[dict[str, Any]]:
        """Totals and per-model token counts, speed and time-to-first-byte histograms."""
        return self._run(self._stats, models)


def _where(models: Sequence[str]) -> tuple[str, list[Any]]:
    if not models:
        return "", []
    return f" WHERE model IN ({', '.join('?' for _ in models)})", list(models)


def _row(values: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(COLUMNS, values, strict=True))
    row["has_capture"] = bool(row["has_capture"])
    return row


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Linear-interpolated percentile of sorted values."""
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def histogram(values: Sequence[float]) -> dict[str, Any] | None:
    """llama-swap's histogram: Sturges' rule bins (5 to 20) and p50/p95/p99; ``None`` if
    there is no positive value."""
    ordered = sorted(v for v in values if v is not None and v > 0)
    if not ordered:
        return None
    low, high = ordered[0], ordered[-1]
    count = min(20, max(5, math.ceil(math.log2(len(ordered))) + 1))
    size = (high - low) / count or 1.0
    bins = [0] * count
    for value in ordered:
        bins[min(int((value - low) / size), count - 1)] += 1
    return {"bins": bins, "min": low, "max": high, "binSize": size,
            "p50": percentile(ordered, 0.5), "p95": percentile(ordered, 0.95),
            "p99": percentile(ordered, 0.99)}


SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie",
                               "x-api-key"})


URL_HEADERS = frozenset({"referer", "location", "content-location"})
"""Headers holding a URL, whose query may carry a credential (``llamaswap.redaction``)."""


def redact(headers: dict[str, str]) -> dict[str, str]:
    return {k: "[REDACTED]" if k.lower() in SENSITIVE_HEADERS
            else redact_url(v) if k.lower() in URL_HEADERS else v
            for k, v in headers.items()}


RawHeaders = Mapping[bytes, Sequence[bytes]]


class Capture:
    """One captured exchange, kept as it passed by (bytes, header lines) until it is read.

    Most captures are evicted unread, so the JSON view (decoded, redacted) is built by
    ``capture_view`` on the first read rather than on every request. Headers are kept as
    the lines they were when the exchange saw them (``frozen_headers``).
    """

    __slots__ = ("id", "path", "method", "req_headers", "req_body", "resp_headers",
                 "resp_body")

    def __init__(self, capture_id: int, path: str, method: str, req_headers: bytes,
                 req_body: bytes) -> None:
        self.id = capture_id
        self.path = path
        self.method = method
        self.req_headers = req_headers
        self.req_body = req_body
        self.resp_headers: bytes | None = None
        self.resp_body = b""

    def frozen(self) -> FrozenCapture:
        """The capture as one tuple of strings and bytes: the collector stops tracking such
        a tuple, so thousands of kept captures cost it nothing (as objects they made each
        full collection take ~50 ms at 200 streams)."""
        return (self.id, self.path, self.method, self.req_headers, self.req_body,
                self.resp_headers, self.resp_body)

    def footprint(self) -> int:
        """Bytes counted against ``captureBuffer``: bodies, headers and a fixed overhead, so
        that captures of empty exchanges are bounded in number too."""
        return (CAPTURE_OVERHEAD + len(self.req_headers) + len(self.req_body)
                + len(self.resp_headers or b"") + len(self.resp_body))


CAPTURE_OVERHEAD = 256
"""Bytes counted per capture beyond its bodies and headers: what its objects cost."""

FrozenCapture = tuple[int, str, str, bytes, bytes, "bytes | None", bytes]
"""id, path, method, request head, request body, response head, response body."""


def frozen_headers(headers: Iterable[tuple[bytes, Sequence[bytes]]]) -> bytes:
    """Header lines as they are sent (``Name: value\r\n``), from ``getAllRawHeaders()``:
    one bytes object, which also no later change to the headers can reach."""
    lines: list[bytes] = []
    for name, values in headers:
        for value in values:
            lines += (name, b": ", value, b"\r\n")
    return b"".join(lines)


def _thawed_headers(lines: bytes) -> dict[bytes, list[bytes]]:
    headers: dict[bytes, list[bytes]] = {}
    for line in lines.split(b"\r\n")[:-1]:
        name, _, value = line.partition(b": ")
        headers.setdefault(name, []).append(value)
    return headers


def capture_view(frozen: FrozenCapture) -> dict[str, Any]:
    """A frozen capture as ``GET /api/captures/<id>`` answers it: decoded, redacted."""
    capture_id, path, method, req_headers, req_body, resp_headers, resp_body = frozen
    response = {} if resp_headers is None else redact(
        {k: v for k, v in decode_headers(_thawed_headers(resp_headers)).items()
         if k.lower() != "content-encoding"})
    return {"id": capture_id, "req_path": path, "req_method": method,
            "req_headers": redact(decode_headers(_thawed_headers(req_headers))),
            "req_body": req_body.decode("utf-8", "replace"),
            "resp_headers": response,
            "resp_body": resp_body.decode("utf-8", "replace")}


def decode_headers(headers: RawHeaders) -> dict[str, str]:
    """Raw header lines as text, repeated values joined as one line would carry them."""
    return {name.decode("latin-1"): b", ".join(values).decode("latin-1")
            for name, values in headers.items()}


class CaptureCache:
    """Captured exchanges by activity id, evicting the oldest beyond ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[int, tuple[int, dict[str, Any] | FrozenCapture]] = \
            OrderedDict()
        self._size = 0

    def put(self, row_id: int, capture: dict[str, Any] | Capture, size: int) -> bool:
        if size > self.budget:
            return False
        self._items[row_id] = (size, capture.frozen() if isinstance(capture, Capture)
                               else capture)
        self._size += size
        while self._size > self.budget:
            _, (old_size, _) = self._items.popitem(last=False)
            self._size -= old_size
        return True

    def get(self, row_id: int) -> dict[str, Any] | None:
        item = self._items.get(row_id)
        if item is None:
            return None
        size, capture = item
        if isinstance(capture, tuple):  # read for the first time: its view, kept
            capture = capture_view(capture)
            self._items[row_id] = (size, capture)  # an existing key: its place stays
        return capture

    def __contains__(self, row_id: object) -> bool:
        return row_id in self._items
