"""llama-swap's ``internal/process`` scenarios (start, stop, TTL, stop escalation, state
events), replayed against a real llamaswap running real model processes.

llama-swap tests its process type directly; here a model's life is driven the way a user drives
it (requests, ``/api/models/unload``, the config's ``ttl``) and observed from outside: the
answers, ``/api/events``, and whether the processes exist.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet.protocol import Protocol

from llamaswap.policy import ModelState
from tests.compat.support import harness, open_upgrade, own_port_model, wsecho_cmd

body_json = harness.body_json
wait_for = harness.wait_for
pid_alive = harness.pid_alive


def model(name: str = "m", *flags: str, extra: str = "") -> str:
    lines = f"models:\n  {name}:\n    {own_port_model(name, *flags)}\n"
    return lines + "".join(f"    {line}\n" for line in extra.splitlines())


async def unload(swapper: Any, name: str) -> int:
    response = await swapper.post(f"/api/models/unload/{name}", b"")
    await treq.content(response)
    return int(response.code)


@pytest_twisted.ensureDeferred
async def test_start_then_stop(llamaswap) -> None:
    """follows internal/process TestProcessCommand_StartStop"""
    swapper = await llamaswap(model())
    assert (await swapper.chat("m")).code == 200
    pid = swapper.pid("m")
    assert pid is not None and pid_alive(pid)
    assert await unload(swapper, "m") == 200
    await wait_for(lambda: swapper.state("m") is ModelState.STOPPED)
    assert not pid_alive(pid)


@pytest_twisted.ensureDeferred
async def test_requests_to_a_ready_model_do_not_restart_it(llamaswap) -> None:
    """follows internal/process TestProcessCommand_EnsureReadyIsIdempotent and
    TestProcessCommand_Run_Idempotent"""
    swapper = await llamaswap(model())
    for _ in range(3):
        assert (await swapper.chat("m")).code == 200
    assert swapper.starts == {"m": 1}


@pytest_twisted.ensureDeferred
async def test_stopping_twice_is_harmless(llamaswap) -> None:
    """follows internal/process TestProcessCommand_Stop_Idempotent"""
    swapper = await llamaswap(model())
    assert (await swapper.chat("m")).code == 200
    assert [await unload(swapper, "m"), await unload(swapper, "m")] == [200, 200]
    await wait_for(lambda: swapper.state("m") is ModelState.STOPPED)
    assert (await swapper.chat("m")).code == 200


@pytest_twisted.ensureDeferred
async def test_a_request_during_stop_gets_a_fresh_process(llamaswap) -> None:
    """follows internal/process TestProcessCommand_EnsureReadyDuringStop"""
    swapper = await llamaswap(model("m", "--ignore-sigterm", extra="unloadTimeout: 2"))
    assert (await swapper.chat("m")).code == 200
    old = swapper.pid("m")
    stopping = swapper.post("/api/models/unload/m", b"")
    await wait_for(lambda: swapper.state("m") is ModelState.STOPPING)
    response = await swapper.chat("m")
    assert response.code == 200
    await stopping
    assert swapper.pid("m") != old and not pid_alive(old)


@pytest_twisted.ensureDeferred
async def test_unload_during_start_aborts_the_start_and_the_waiting_request(
        llamaswap) -> None:
    """follows internal/process TestProcessCommand_StopCancelsRun"""
    # unloadTimeout far above wait_for's 10 s: the stop must be the SIGTERM, not the SIGKILL.
    swapper = await llamaswap(model("m", "--never-healthy", extra="unloadTimeout: 60"))
    waiting = swapper.chat("m")
    await wait_for(lambda: swapper.state("m") is ModelState.STARTING and swapper.pid("m"))
    pid = swapper.pid("m")
    assert await unload(swapper, "m") == 200
    response = await waiting
    assert response.code >= 500
    assert "error" in await body_json(response)
    await wait_for(lambda: swapper.state("m") is ModelState.STOPPED)
    assert not pid_alive(pid)


@pytest_twisted.ensureDeferred
async def test_shutdown_during_start_leaves_no_process(llamaswap) -> None:
    """follows internal/process TestProcessCommand_ParentCtxCancelDuringStart"""
    swapper = await llamaswap(model("m", "--never-healthy", extra="unloadTimeout: 60"))
    waiting = swapper.chat("m")
    waiting.addErrback(lambda failure: None)
    await wait_for(lambda: swapper.state("m") is ModelState.STARTING and swapper.pid("m"))
    pid = swapper.pid("m")
    began = harness.reactor.seconds()
    await swapper.service.stopService()
    assert harness.reactor.seconds() - began < 30  # SIGTERM ended it, not the 60 s SIGKILL
    assert not pid_alive(pid)
    response = await waiting
    if response is not None:
        assert response.code >= 500
        await treq.content(response)


@pytest_twisted.ensureDeferred
async def test_a_model_can_start_and_stop_many_times(llamaswap) -> None:
    """follows internal/process TestProcessCommand_RunStopCycle"""
    swapper = await llamaswap(model())
    pids = []
    for _ in range(3):
        assert (await swapper.chat("m")).code == 200
        pids.append(swapper.pid("m"))
        assert await unload(swapper, "m") == 200
        await wait_for(lambda: swapper.state("m") is ModelState.STOPPED)
    assert len(set(pids)) == 3 and not any(pid_alive(pid) for pid in pids)


@pytest_twisted.ensureDeferred
async def test_an_upstream_dying_mid_answer_does_not_take_the_proxy_down(llamaswap) -> None:
    """follows internal/process TestProcessCommand_ReverseProxyPanicIsRecovered"""
    swapper = await llamaswap(model())
    response = await swapper.chat("m", stream=True, test_crash_after=2)
    assert response.code == 200  # the stream had begun
    try:
        await treq.content(response)
    except Exception:  # noqa: BLE001 - the cut stream: an abort is what the client must see
        pass
    else:
        raise AssertionError("a stream cut by the upstream must not look complete")
    assert (await swapper.chat("m")).code == 200
    assert (await swapper.get("/health")).code == 200


@pytest_twisted.ensureDeferred
async def test_ttl_unloads_an_idle_model_and_zero_never_does(llamaswap) -> None:
    """follows internal/process TestProcessCommand_TTL_StopsAfterIdle and
    TestProcessCommand_TTL_ZeroDisables"""
    swapper = await llamaswap(f"""
models:
  short:
    {own_port_model("short")}
    ttl: 1
  forever:
    {own_port_model("forever")}
    ttl: 0
groups:
  both: {{swap: false, exclusive: false, members: [short, forever]}}
""")
    for name in ("forever", "short"):
        assert (await swapper.chat(name)).code == 200
    await wait_for(lambda: swapper.state("short") is ModelState.STOPPED, timeout=20)
    assert swapper.state("forever") is ModelState.READY


@pytest_twisted.ensureDeferred
async def test_ttl_counts_from_the_end_of_the_last_request(llamaswap) -> None:
    """follows internal/process TestProcessCommand_TTL_ResetsOnRequest"""
    swapper = await llamaswap(model("m", extra="ttl: 1"))
    assert (await swapper.chat("m")).code == 200
    response = await swapper.chat("m", test_delay=2.5)  # longer than the TTL
    assert response.code == 200
    assert swapper.state("m") is ModelState.READY  # not stopped while the request ran
    await wait_for(lambda: swapper.state("m") is ModelState.STOPPED, timeout=20)


@pytest_twisted.ensureDeferred
async def test_stop_does_not_hang_on_a_wrapper_whose_child_holds_the_pipes(
        llamaswap, tmp_path: Path) -> None:
    """follows internal/process TestProcessCommand_StopForkingWrapper and
    TestProcessCommand_StopReapsForkedGrandchild"""
    pid_file = tmp_path / "grandchild.pid"
    swapper = await llamaswap(model("m", "--grandchild", str(pid_file)))
    assert (await swapper.chat("m")).code == 200
    grandchild = int(pid_file.read_text())
    assert pid_alive(grandchild)
    assert await unload(swapper, "m") == 200
    await wait_for(lambda: swapper.state("m") is ModelState.STOPPED, timeout=30)
    await wait_for(lambda: not pid_alive(grandchild), timeout=10)


GRACEFUL = """
import os, signal, sys, time
def leave(*_):
    time.sleep(1.0)  # a slow, graceful shutdown
    open(sys.argv[1], "w").write("graceful")
    sys.exit(0)
signal.signal(signal.SIGTERM, leave)
open(sys.argv[1] + ".armed", "w").close()
while True:
    time.sleep(0.1)
"""


@pytest_twisted.ensureDeferred
async def test_stop_gives_a_slow_sigterm_handler_its_whole_unload_timeout(
        llamaswap, tmp_path: Path) -> None:
    """follows internal/process TestProcessCommand_StopHonorsGracefulTimeout"""
    script, marker = tmp_path / "graceful.py", tmp_path / "left"
    script.write_text(GRACEFUL)
    swapper = await llamaswap(f"""
hooks:
  on_startup:
    preload: [m]
models:
  m:
    cmd: {sys.executable} {script} {marker}
    proxy: http://127.0.0.1:{harness.free_port()}
    checkEndpoint: none
    unloadTimeout: 20
""")
    await wait_for(lambda: swapper.state("m") is ModelState.READY, timeout=20)
    pid = swapper.pid("m")
    armed = tmp_path / "left.armed"
    await wait_for(armed.exists, timeout=20)  # its SIGTERM handler is in place
    assert await unload(swapper, "m") == 200
    await wait_for(lambda: swapper.state("m") is ModelState.STOPPED, timeout=30)
    assert marker.read_text() == "graceful"  # it finished its handler: no early SIGKILL
    assert not pid_alive(pid)


class _Events(Protocol):
    """Collects ``/api/events`` server-sent events as they arrive."""

    def __init__(self) -> None:
        self.buffer = b""
        self.events: list[dict[str, Any]] = []

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    self.events.append(json.loads(line[5:]))

    def states_of(self, model_id: str) -> list[str]:
        states: list[str] = []
        for event in self.events:
            if event.get("type") != "modelStatus":
                continue
            for entry in json.loads(event["data"]):
                if entry["id"] == model_id and (not states or states[-1] != entry["state"]):
                    states.append(entry["state"])
        return states


@pytest_twisted.ensureDeferred
async def test_state_changes_are_published_as_events(llamaswap) -> None:
    """follows internal/process TestProcessCommand_EmitsStateChangeEvents"""
    swapper = await llamaswap(model())
    response = await swapper.get("/api/events", unbuffered=True)
    events = _Events()
    response.deliverBody(events)
    await wait_for(lambda: events.states_of("m") == ["stopped"])
    assert (await swapper.chat("m")).code == 200
    assert await unload(swapper, "m") == 200
    await wait_for(lambda: events.states_of("m")[-1:] == ["stopped"]
                   and len(events.states_of("m")) > 1)
    assert events.states_of("m") == ["stopped", "starting", "ready", "stopping", "stopped"]
    events.transport.stopProducing()  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_racing_requests_and_unloads_settle(llamaswap) -> None:
    """follows internal/process TestProcessCommand_ConcurrentRunStop"""
    swapper = await llamaswap(model())
    work = []
    for _ in range(4):
        work.append(swapper.chat("m"))
        work.append(swapper.post("/api/models/unload/m", b""))
    for pending in work:
        response = await pending
        assert response.code in (200, 502, 503), response.code
        await treq.content(response)
    assert (await swapper.chat("m")).code == 200
    assert swapper.state("m") is ModelState.READY and pid_alive(swapper.pid("m"))


@pytest_twisted.ensureDeferred
async def test_an_open_ignored_websocket_does_not_keep_a_model_past_its_ttl(llamaswap) -> None:
    """follows internal/process TestProcessCommand_TTL_IgnoresWebsocket"""
    swapper = await llamaswap(f"""
models:
  m:
    cmd: {wsecho_cmd()}
    ttl: 1
    compat: {{ignoreWebsockets: true}}
""")
    assert (await swapper.get("/upstream/m/health")).code == 200
    pid = swapper.pid("m")
    socket = await open_upgrade(swapper.port, "/upstream/m/socket")
    assert socket.status == 101
    # The socket stays open, but it is no request in flight: the TTL runs out regardless.
    await wait_for(lambda: swapper.state("m") is ModelState.STOPPED, timeout=30)
    assert pid is not None and not pid_alive(pid)
    await socket.closed  # the model server went away with its socket
