"""llama-swap's ``internal/router/scheduler`` FIFO scenarios and the loading stream's status
update (``internal/router``), beyond those in ``test_go_router.py``: replayed over HTTP
against a real llamaswap with ``routing.scheduler.use: fifo`` (as a llama-swap config may
set it) and real model processes.

llama-swap drives its FIFO with fake effects and counts grants; here a request that is
granted gets its model's answer, one that is refused or dropped gets an error, and the
scheduler's queue is read from llamaswap's router (``queued()``: requests waiting for a
model to load or for their turn).
"""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
import treq
from twisted.internet.defer import Deferred

from llamaswap.policy import ModelState
from tests.compat.support import Follow, harness, own_port_model

body_json = harness.body_json
wait_for = harness.wait_for

FIFO = "routing:\n  scheduler:\n    use: fifo\n"


def models(*specs: str, extra: str = "") -> str:
    """``name`` or ``name:flag flag`` (flags for the test upstream), plus extra YAML."""
    lines = ["models:"]
    for spec in specs:
        name, _, flags = spec.partition(":")
        block = own_port_model(name)
        if flags:
            block = block.replace("--quiet", "--quiet " + flags, 1)
        lines += [f"  {name}:", f"    {block}"]
    return FIFO + "\n".join(lines) + "\n" + extra


def swap_group(*names: str) -> str:
    return f"groups:\n  g: {{swap: true, exclusive: true, members: [{', '.join(names)}]}}\n"


def quiet(d: Deferred[Any]) -> Deferred[Any]:
    """A request the test may abandon: its failure (a cancel) is expected."""
    d.addErrback(lambda failure: None)
    return d


async def answered(pending: Deferred[Any]) -> tuple[int, Any]:
    response = await pending
    return int(response.code), await body_json(response)


async def hold(swapper: Any, model: str) -> Follow:
    """A streamed request whose upstream goes quiet after one token: ``model`` stays busy
    until ``.stop()``."""
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}],
            "stream": True, "test_stall_after": 1}
    response = await swapper.post("/v1/chat/completions", body, unbuffered=True)
    assert response.code == 200
    held = Follow()
    response.deliverBody(held)
    return held


@pytest_twisted.ensureDeferred
async def test_a_ready_model_serves_without_a_new_start(llamaswap) -> None:
    """follows internal/router/scheduler TestFIFO_FastPath"""
    swapper = await llamaswap(models("a"))
    for _ in range(3):
        assert (await swapper.chat("a")).code == 200
    assert swapper.starts == {"a": 1}


@pytest_twisted.ensureDeferred
async def test_shutdown_fails_every_waiting_request_quietly(llamaswap, logged) -> None:
    """follows internal/router/scheduler TestFIFO_OnShutdown_FailsAllWaiters"""
    swapper = await llamaswap(models("a:--never-healthy", "b:--never-healthy", "c", extra="""
groups:
  ga: {swap: true, exclusive: false, members: [a]}
  gb: {swap: true, exclusive: false, members: [b]}
  gc: {swap: true, exclusive: true, members: [c]}
"""))
    waiting = [swapper.chat(name) for name in ("a", "a", "b", "b")]
    await wait_for(lambda: swapper.state("a") is ModelState.STARTING and
                   swapper.state("b") is ModelState.STARTING, timeout=30)
    waiting.append(swapper.chat("c"))  # collides with both loads: queued
    await wait_for(lambda: swapper.service.router.queued() == 5, timeout=20)
    await swapper.service.stopService()
    for pending in waiting:
        code, answer = await answered(pending)
        assert code >= 500 and answer["error"]["message"]
    assert "c" not in swapper.starts
    # The failed requests end after the activity store closed: nothing is logged as lost.
    assert not [line for line in logged if "could not record" in line]


@pytest_twisted.ensureDeferred
async def test_unloading_a_queued_model_drops_its_requests(llamaswap) -> None:
    """follows internal/router/scheduler TestFIFO_OnUnload_DropsQueuedRequests"""
    swapper = await llamaswap(models("a:--startup-delay 3", "b", extra=swap_group("a", "b")))
    first = swapper.chat("a")
    await wait_for(lambda: swapper.state("a") is ModelState.STARTING, timeout=20)
    queued = swapper.chat("b")
    await wait_for(lambda: swapper.service.router.queued() == 2, timeout=20)
    unload = await swapper.post("/api/models/unload/b", b"")
    assert unload.code == 200
    await treq.content(unload)
    code, answer = await answered(queued)
    assert code >= 400 and answer["error"]["message"]
    assert (await answered(first))[0] == 200  # a's load went on untouched
    assert "b" not in swapper.starts


@pytest_twisted.ensureDeferred
async def test_unloading_a_loading_model_fails_its_waiters(llamaswap) -> None:
    """follows internal/router/scheduler TestFIFO_OnUnload_ReleasesActiveWaiters"""
    swapper = await llamaswap(models("a:--never-healthy"))
    waiting = [swapper.chat("a"), swapper.chat("a")]
    await wait_for(lambda: swapper.service.router.queued() == 2, timeout=20)
    unload = await swapper.post("/api/models/unload/a", b"")
    assert unload.code == 200
    await treq.content(unload)
    for pending in waiting:
        code, answer = await answered(pending)
        assert code >= 400 and answer["error"]["message"]
    await wait_for(lambda: swapper.pid("a") is None, timeout=30)


@pytest_twisted.ensureDeferred
async def test_a_colliding_model_waits_for_the_load_and_its_request(llamaswap) -> None:
    """follows internal/router/scheduler TestFIFO_QueueOnEvictionCollision"""
    swapper = await llamaswap(models("a:--startup-delay 1", "b", extra=swap_group("a", "b")))
    body = {"model": "a", "messages": [{"role": "user", "content": "hello"}],
            "stream": True, "test_stall_after": 1}
    first = swapper.post("/v1/chat/completions", body, unbuffered=True)
    await wait_for(lambda: swapper.state("a") is ModelState.STARTING, timeout=20)
    evicting = swapper.chat("b")
    await wait_for(lambda: swapper.service.router.queued() == 2, timeout=20)
    response = await first  # a became ready and serves
    held = Follow()
    response.deliverBody(held)
    await wait_for(lambda: swapper.service.router.in_flight("a") == 1, timeout=20)
    assert swapper.service.router.queued() == 1 and swapper.pid("b") is None
    held.stop()  # a's request is over: now b may evict it
    code, answer = await answered(evicting)
    assert code == 200 and answer["model"] == "b"
    assert swapper.pid("a") is None


@pytest_twisted.ensureDeferred
async def test_requests_over_the_limit_do_not_join_a_load(llamaswap) -> None:
    """follows internal/router/scheduler TestFIFO_ConcurrencyLimit_SwapWaiters"""
    swapper = await llamaswap(models("a:--startup-delay 3").replace(
        "  a:\n", "  a:\n    concurrencyLimit: 2\n", 1))
    admitted = [swapper.chat("a"), swapper.chat("a")]
    await wait_for(lambda: swapper.service.router.queued() == 2, timeout=20)
    over = await swapper.chat("a")
    assert over.code == 429
    await treq.content(over)
    for pending in admitted:
        assert (await answered(pending))[0] == 200
    assert swapper.starts == {"a": 1}


@pytest_twisted.ensureDeferred
async def test_queued_requests_count_against_the_limit(llamaswap) -> None:
    """follows internal/router/scheduler TestFIFO_ConcurrencyLimit_QueuedWaitersReserveCapacity"""
    swapper = await llamaswap(models("a", "b:--startup-delay 2",
                                     extra=swap_group("a", "b")).replace(
        "  a:\n", "  a:\n    concurrencyLimit: 2\n", 1))
    loading = swapper.chat("b")
    await wait_for(lambda: swapper.state("b") is ModelState.STARTING, timeout=20)
    admitted = [swapper.chat("a"), swapper.chat("a")]
    await wait_for(lambda: swapper.service.router.queued() == 3, timeout=20)
    over = await swapper.chat("a")
    assert over.code == 429
    await treq.content(over)
    assert "a" not in swapper.starts
    assert (await answered(loading))[0] == 200
    for pending in admitted:
        code, answer = await answered(pending)
        assert code == 200 and answer["model"] == "a"
    assert swapper.starts == {"a": 1, "b": 1}


@pytest_twisted.ensureDeferred
async def test_a_cancelled_queued_request_frees_its_place_under_the_limit(llamaswap) -> None:
    """follows internal/router/scheduler
    TestFIFO_ConcurrencyLimit_CancelledQueuedWaiterReleasesReservation"""
    swapper = await llamaswap(models("a", "b:--startup-delay 3",
                                     extra=swap_group("a", "b")).replace(
        "  a:\n", "  a:\n    concurrencyLimit: 1\n", 1))
    loading = swapper.chat("b")
    await wait_for(lambda: swapper.state("b") is ModelState.STARTING, timeout=20)
    cancelled = quiet(swapper.chat("a"))
    await wait_for(lambda: swapper.service.router.queued() == 2, timeout=20)
    over = await swapper.chat("a")
    assert over.code == 429
    await treq.content(over)
    cancelled.cancel()
    await wait_for(lambda: swapper.service.router.queued() == 1, timeout=20)
    retry = swapper.chat("a")
    await wait_for(lambda: swapper.service.router.queued() == 2, timeout=20)
    assert (await answered(loading))[0] == 200
    code, answer = await answered(retry)
    assert code == 200 and answer["model"] == "a"


@pytest_twisted.ensureDeferred
async def test_a_cancelled_waiter_of_a_load_is_not_served(llamaswap) -> None:
    """follows internal/router/scheduler TestFIFO_OnCancel_SwapWaiter"""
    swapper = await llamaswap(models("a:--startup-delay 3", extra="captureBuffer: 5\n"))
    live = swapper.chat("a")
    cancelled = quiet(swapper.chat("a"))
    await wait_for(lambda: swapper.service.router.queued() == 2, timeout=20)
    cancelled.cancel()
    await wait_for(lambda: swapper.service.router.queued() == 1, timeout=20)
    assert (await answered(live))[0] == 200
    await wait_for(lambda: swapper.service.observability.in_flight == {}, timeout=20)
    page: dict[str, Any] = {}
    for _ in range(100):  # the served request's row is stored soon after it ends
        page = await body_json(await swapper.get("/api/metrics/activity"))
        if any(row["resp_status_code"] == 200 for row in page["data"]):
            break
        await harness.sleep(0.1)
    served = [row for row in page["data"] if row["has_capture"]]
    assert len(served) == 1  # only the live request reached the model
    assert swapper.starts == {"a": 1}


@pytest_twisted.ensureDeferred
async def test_the_loading_stream_shows_a_queued_requests_position(llamaswap) -> None:
    """follows internal/router TestLoadingWriter_StartShowsSetUpdate"""
    swapper = await llamaswap(models("a", "b", extra=swap_group("a", "b")).replace(
        "models:", "sendLoadingState: true\nmodels:", 1))
    held = await hold(swapper, "a")
    response = await swapper.chat("b", stream=True)
    assert response.code == 200
    loading = Follow()
    response.deliverBody(loading)

    def reasoning() -> str:
        text = ""
        for line in loading.data.decode().splitlines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                text += delta.get("reasoning_content") or ""
        return text

    await wait_for(lambda: "position 1" in reasoning(), timeout=20)
    held.stop()
    await loading.done
    assert "Done!" in reasoning()
    assert swapper.state("b") is ModelState.READY
