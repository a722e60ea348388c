"""The activity history: one SQLite row per finished model request.

SQLite (standard library) runs on one dedicated thread, so the reactor never waits for a
disk and the connection is only ever used by the thread that opened it. Inserts are group
committed: rows that arrive while a write is on the thread go in the next one, as one
transaction, so a busy proxy makes one thread hop per batch rather than per request (per
request it cost a third of a CPU at 1,000 requests/s), and a batch is one multi-row INSERT
per 500 rows (``_insert``). Batches start at most every ``WRITE_INTERVAL`` seconds: under
load the rows of that interval go in one batch instead of a handful each (a batch costs a
thread hop, a transaction and a statement), while a lone request is written at once. Pages
and stats first send what waits, so they always see every row added before them. The
table is cut to a row cap after each batch. Rows waiting for the thread are bounded
(``MAX_PENDING``): beyond, new rows are dropped and the log says so, rather than memory
growing. ``CaptureCache`` keeps request and response bodies in
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

from llamaswap.compat.gotypes import go_bytes
from llamaswap.compat.headers import header_map
from llamaswap.compat.stats import histogram, percentile
from llamaswap.logs import get_logger
from llamaswap.redaction import redact_url

T = TypeVar("T")
__all__ = ["ActivityStore", "Capture", "CaptureCache", "Query", "histogram", "percentile"]

COLUMNS = ("id", "ts", "model", "endpoint", "method", "status", "duration_ms", "ttfb_ms",
           "wait_ms", "input_tokens", "output_tokens", "cached_tokens", "prompt_per_second",
           "tokens_per_second", "client", "error", "has_capture", "content_type",
           "draft_tokens", "draft_acc_tokens")
_INSERTED = COLUMNS[1:]
ROWS_PER_INSERT = 500
"""Rows in one INSERT: SQLite's default limit for a VALUES list."""
MAX_PENDING = 20_000
"""Rows waiting for the store's thread beyond which new ones are dropped."""
WRITE_INTERVAL = 0.05
"""Seconds from the start of one batch to the start of the next, at the least."""


class StoreBusy(Exception):
    """The row was dropped: too many were already waiting to be written."""


class StoreClosed(Exception):
    """The row was dropped: the store has stopped (a request that ended during shutdown)."""


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
    has_capture INTEGER NOT NULL DEFAULT 0,
    content_type TEXT,
    draft_tokens INTEGER,
    draft_acc_tokens INTEGER
);
CREATE INDEX IF NOT EXISTS activity_model ON activity (model, id DESC);
"""
_ADDED_COLUMNS = (("content_type", "TEXT"), ("draft_tokens", "INTEGER"),
                  ("draft_acc_tokens", "INTEGER"))
"""Columns a store file written by an older llamaswap lacks: added when it is opened."""

SORTABLE = {"id": "id", "time": "ts", "model": "model", "req_path": "endpoint",
            "resp_status_code": "status", "resp_content_type": "content_type",
            "cached": "cached_tokens", "prompt": "input_tokens", "generated": "output_tokens",
            "drafted": "draft_tokens", "prompt_speed": "prompt_per_second",
            "gen_speed": "tokens_per_second", "duration": "duration_ms",
            # llamaswap's own names
            "endpoint": "endpoint", "status": "status", "ttfb": "ttfb_ms"}
"""Sort keys (llama-swap's UI column ids, then llamaswap's) -> columns."""
MAX_PAGE_SIZE = 999


@dataclass(frozen=True)
class Query:
    models: Sequence[str] = ()
    page: int = 1
    limit: int = 25
    sort: str = "id"
    descending: bool = True
    start: float | None = None
    """Unix seconds, inclusive bounds on the row's time (``None``: unbounded)."""
    end: float | None = None
    min_id: int | None = None
    max_id: int | None = None
    status: str = ""
    """llamaswap's own filter: ``2xx`` ... ``5xx``, or ``error`` (4xx, 5xx or an error)."""
    path: str = ""
    """llamaswap's own filter: rows whose path contains this text (case-insensitive)."""


class ActivityStore(Service):
    """Rows in, pages and per-model stats out; every call returns a ``Deferred``."""

    log = get_logger()

    def __init__(self, reactor: Any, path: str | None, max_rows: int,
                 write_interval: float = WRITE_INTERVAL) -> None:
        self._reactor = reactor
        self.write_interval = write_interval
        self._last_batch = float("-inf")  # when the last batch started (reactor.seconds())
        self._next_batch: Any = None  # the delayed start of the next batch
        self.path = path
        self.max_rows = max_rows
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="llamaswap-activity")
        self._db: sqlite3.Connection | None = None
        self._shutdown_trigger: Any = None
        self._pending: list[tuple[dict[str, Any], Deferred[int]]] = []
        self._writing = 0  # batches on the thread
        self._stopped = False  # set by stopService: later rows are refused (StoreClosed)
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
        self._stopped = True
        trigger, self._shutdown_trigger = self._shutdown_trigger, None
        if trigger is not None:
            try:
                self._reactor.removeSystemEventTrigger(trigger)
            except (ValueError, KeyError):
                pass
        if not self._pool.started:  # never started, or stopped already
            return succeed(None)
        self._send_waiting()  # (rows still waiting are written before the store closes)
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
        present = {row[1] for row in db.execute("PRAGMA table_info(activity)")}
        for column, kind in _ADDED_COLUMNS:
            if column not in present:
                db.execute(f"ALTER TABLE activity ADD COLUMN {column} {kind}")
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
        if self._db is None:  # stopped while the batch waited for this thread
            raise StoreClosed()
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
        where, params = _where(query.models, query)
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
                "SELECT model, COUNT(*), SUM(MAX(input_tokens, 0)), SUM(MAX(output_tokens, 0)), "
                "SUM(MAX(cached_tokens, 0)), SUM(status >= 400), AVG(duration_ms) "
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
                "ttfb_ms": histogram(ttfbs), "_prompt": prompt_speeds, "_gen": speeds}
        totals: dict[str, Any] = {key: sum(m[key] for m in per_model.values()) for key in (
            "total_requests", "total_input_tokens", "total_output_tokens",
            "total_cache_tokens", "errors")}
        all_prompt = [v for m in per_model.values() for v in m.pop("_prompt")]
        all_gen = [v for m in per_model.values() for v in m.pop("_gen")]
        return {**totals, "prompt_histogram": histogram(all_prompt),
                "gen_histogram": histogram(all_gen), "models": per_model}

    # -- on the reactor ---------------------------------------------------------------------

    def add(self, row: dict[str, Any]) -> Deferred[int]:
        """Store one finished request; fires with its row id, or fails with ``StoreBusy``
        when ``MAX_PENDING`` rows are already waiting (the store says so in the log), or
        with ``StoreClosed`` once the store has stopped."""
        if self._stopped:
            return fail(StoreClosed())
        if len(self._pending) >= MAX_PENDING:
            if not self._dropped:
                self.log.warn("activity store: {count} rows waiting to be written; new rows "
                              "are dropped until they are", count=len(self._pending))
            self._dropped += 1
            return fail(StoreBusy())
        d: Deferred[int] = Deferred()
        self._pending.append((row, d))
        if not self._writing and self._next_batch is None:
            self._write_soon()
        return d

    def _write_soon(self) -> None:
        """Start the next batch now, or once ``write_interval`` has passed since the last."""
        wait = self._last_batch + self.write_interval - self._reactor.seconds()
        if wait <= 0:
            self._write_pending()
        else:
            self._next_batch = self._reactor.callLater(wait, self._write_pending)

    def _send_waiting(self) -> None:
        """Rows waiting for the interval go now (a page or stats must see them)."""
        if self._next_batch is not None:
            self._next_batch.cancel()
            self._next_batch = None
        if self._pending:  # (after a batch on the thread: the thread takes them in order)
            self._write_pending()

    def _write_pending(self) -> None:
        self._next_batch = None
        batch, self._pending = self._pending, []
        self._writing += 1
        self._last_batch = self._reactor.seconds()

        def written(ids: list[int]) -> None:
            for (_, d), row_id in zip(batch, ids, strict=True):
                d.callback(row_id)

        def failed(failure: Failure) -> None:
            for _, d in batch:
                d.errback(failure)

        def next_batch(_: object) -> None:
            self._writing -= 1
            if self._dropped and len(self._pending) < MAX_PENDING // 2:
                self.log.warn("activity store: recording again ({count} rows were dropped)",
                              count=self._dropped)
                self._dropped = 0
            if self._pending and self._next_batch is None:
                self._write_soon()

        d = self._run(self._insert, [row for row, _ in batch])
        d.addCallbacks(written, failed)
        d.addBoth(next_batch)

    def page(self, query: Query) -> Deferred[dict[str, Any]]:
        """``{"data", "page", "limit", "total", "total_pages"}`` as llama-swap answers."""
        self._send_waiting()
        return self._run(self._select, query)

    def stats(self, models: Sequence[str] = ()) -> Deferred[dict[str, Any]]:
        """llama-swap's ``ActivityStats`` (totals, prompt and generation speed histograms),
        and per model (``models``) the same with time-to-first-byte and error counts."""
        self._send_waiting()
        return self._run(self._stats, models)


SHOWN_TIME_SLACK = 1e-6
"""The resolution of a shown row time, in seconds (float rounding included)."""


def _where(models: Sequence[str], bounds: Query | None = None) -> tuple[str, list[Any]]:
    conditions: list[str] = []
    params: list[Any] = []
    if models:
        conditions.append(f"model IN ({', '.join('?' for _ in models)})")
        params += models
    if bounds is not None:
        # A row's time is shown rounded to the microsecond (``compat.gotypes.go_time``):
        # bounds copied from a shown time must still take that row in.
        start = None if bounds.start is None else bounds.start - SHOWN_TIME_SLACK
        end = None if bounds.end is None else bounds.end + SHOWN_TIME_SLACK
        for value, condition in ((start, "ts >= ?"), (end, "ts <= ?"),
                                 (bounds.min_id, "id >= ?"), (bounds.max_id, "id <= ?")):
            if value is not None:
                conditions.append(condition)
                params.append(value)
        if bounds.status == "error":
            conditions.append("(status >= 400 OR (error IS NOT NULL AND error != ''))")
        elif bounds.status:
            low = int(bounds.status[0]) * 100
            conditions.append("status >= ? AND status < ?")
            params += [low, low + 100]
        if bounds.path:
            conditions.append("instr(lower(endpoint), ?) > 0")
            params.append(bounds.path.lower())
    if not conditions:
        return "", []
    return " WHERE " + " AND ".join(conditions), params


def _row(values: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(COLUMNS, values, strict=True))
    row["has_capture"] = bool(row["has_capture"])
    return row


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
    """A frozen capture as ``GET /api/captures/<id>`` answers it: llama-swap's
    ``ReqRespCapture`` (bodies base64, one value per header, credentials left out) and
    llamaswap's ``req_method``."""
    capture_id, path, method, req_headers, req_body, resp_headers, resp_body = frozen
    response = None if resp_headers is None else {
        name: value for name, value in header_map(_thawed_headers(resp_headers).items()).items()
        if name.lower() != "content-encoding"}
    return {"id": capture_id, "req_path": path,
            "req_headers": header_map(_thawed_headers(req_headers).items()),
            "req_body": go_bytes(req_body),
            "resp_headers": response,
            "resp_body": go_bytes(resp_body if resp_headers is not None else None),
            "req_method": method}


class CaptureCache:
    """Captured exchanges by activity id, evicting the oldest beyond ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[int, tuple[int, dict[str, Any] | FrozenCapture]] = \
            OrderedDict()
        self._size = 0

    def set_budget(self, budget: int) -> None:
        """A new ``captureBuffer`` (reload): the oldest captures go until the rest fit."""
        self.budget = budget
        while self._size > budget and self._items:
            _, (old_size, _) = self._items.popitem(last=False)
            self._size -= old_size

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
