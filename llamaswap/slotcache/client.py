"""llama-server's slot API over HTTP: ``/props``, ``/slots`` and slot save/restore.

Every call returns a Deferred that can be cancelled (the caller bounds the whole save or
restore with a timeout on its clock). ``SlotApi`` is what the manager needs, so tests can
put a fake llama-server in its place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import quote

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from llamaswap.upstream import UpstreamClient, read_body


class SlotApiError(Exception):
    """llama-server answered a slot call with an error (or not with JSON)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class SlotApi(Protocol):
    def props(self) -> Deferred[dict[str, Any]]: ...

    def slots(self) -> Deferred[Any]: ...

    def save(self, slot: int, filename: str) -> Deferred[dict[str, Any]]: ...

    def restore(self, slot: int, filename: str) -> Deferred[dict[str, Any]]: ...


class HttpSlotApi:
    """The slot API of the llama-server at ``base_url``, with the model's upstream headers
    (e.g. its ``--api-key``). A pool of its own keeps these calls off the data path's."""

    def __init__(self, reactor: Any, base_url: str,
                 headers: Sequence[tuple[str, str]] = ()) -> None:
        self._base = base_url.rstrip("/")
        self._headers = list(headers)
        self._client = UpstreamClient(reactor, max_idle_per_origin=0)

    def props(self) -> Deferred[dict[str, Any]]:
        return Deferred.fromCoroutine(self._call("GET", "/props"))

    def slots(self) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._call("GET", "/slots"))

    def save(self, slot: int, filename: str) -> Deferred[dict[str, Any]]:
        return Deferred.fromCoroutine(self._call(
            "POST", f"/slots/{slot}?action=save", {"filename": filename}))

    def restore(self, slot: int, filename: str) -> Deferred[dict[str, Any]]:
        return Deferred.fromCoroutine(self._call(
            "POST", f"/slots/{slot}?action=restore", {"filename": filename}))

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = self._base + quote(path, safe="/?=&")
        headers = Headers()
        for name, value in self._headers:
            headers.addRawHeader(name, value)
        data = None
        if body is not None:
            headers.setRawHeaders("Content-Type", ["application/json"])
            data = json.dumps(body).encode("utf-8")
        response = await self._client.request(method.encode("ascii"), url, headers, data)
        content = await read_body(response)
        try:
            decoded = json.loads(content)
        except ValueError:
            raise SlotApiError(f"{method} {path}: HTTP {response.code}, not JSON",
                               response.code) from None
        if response.code != 200:
            error = decoded.get("error") if isinstance(decoded, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            raise SlotApiError(f"{method} {path}: HTTP {response.code}: "
                               f"{message if message else repr(content[:200])}", response.code)
        return decoded


async def each_answer(calls: list[Deferred[dict[str, Any]]]) -> list[dict[str, Any] | SlotApiError]:
    """The answers of slot calls sent all at once, in order; a call llama-server refused is
    its ``SlotApiError``. llama-server runs them one after the other anyway, but nothing
    waits for a round trip between two of them. Any other failure (the server is gone, a
    cancel by the time limit) fails the whole: cancelling it cancels every call."""
    def refused(failure: Failure) -> SlotApiError:
        failure.trap(SlotApiError)
        return failure.value  # type: ignore[return-value]

    outcomes: list[Deferred[dict[str, Any] | SlotApiError]] = [
        d.addErrback(refused) for d in calls]
    try:
        return await gatherResults(outcomes, consumeErrors=True)
    except FirstError as e:
        e.subFailure.raiseException()
        raise  # not reached: raiseException always raises


def timing_ms(result: dict[str, Any], key: str) -> float:
    """llama-server's own time for a save or restore (``timings.save_ms``), 0 if absent."""
    timings = result.get("timings")
    value = timings.get(key) if isinstance(timings, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
