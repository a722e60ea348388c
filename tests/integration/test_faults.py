"""The fault-injection suite (issue 6): one test per fault, real processes on loopback.

Each test asserts what the client sees, what the log says and which processes exist
afterwards: every process a test spawns carries the test's ``tmp_path`` in its command line
(``--pid-file``), so ``strays()`` finds any that survived. llamaswap's own file descriptors
are counted before and after (``/proc/self/fd``): no leak.

After every test, ``no_process_left`` checks that no process of that test is left, including
descendants that called ``setsid`` or changed their command line: each test runs with its
own value of ``LLAMASWAP_TEST_RUN`` in the environment, which everything it starts inherits
(llamaswap passes its environment on to models), and ``/proc/<pid>/environ`` is scanned.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from conftest import body_json, free_port, pid_alive, upstream_cmd, wait_for
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.web.resource import Resource
from twisted.web.server import Site

from llamaswap.orphans import carrying
from llamaswap.policy import ModelState

REPO = Path(__file__).resolve().parents[2]
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


# -- what the tests observe ------------------------------------------------------------------

TEST_RUN = "LLAMASWAP_TEST_RUN"


@pytest_twisted.async_yield_fixture(autouse=True)
async def no_process_left(monkeypatch: pytest.MonkeyPatch, request: Any) -> Any:
    """Fail the test if any process it started (marked through the environment) outlives
    it; such a process is killed, so that one failure does not spill into the next test."""
    mark = f"{os.getpid()}-{request.node.nodeid}"
    monkeypatch.setenv(TEST_RUN, mark)
    yield
    try:
        await wait_for(lambda: not carrying(TEST_RUN, mark), timeout=15)
    except AssertionError:
        left = carrying(TEST_RUN, mark)
        for info in left:
            try:
                os.kill(info.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise AssertionError(f"processes of this test left behind: {left}") from None


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def strays(marker: str) -> list[tuple[int, str]]:
    """Live processes (not zombies) whose command line mentions ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append((int(entry), cmdline.decode(errors="replace")))
    return found


def said(lines: list[str], *fragments: str) -> bool:
    return any(all(f in line for f in fragments) for line in lines)


class Aftermath:
    """Before/after checks: no stray process, no leaked descriptor."""

    def __init__(self, swapper: Any, marker: Path) -> None:
        self.swapper = swapper
        self.marker = str(marker)
        self.fds = open_fds()

    async def check(self) -> None:
        await self.swapper.service.router.unload()
        await self.swapper.pool.closeCachedConnections()
        try:
            await wait_for(lambda: not strays(self.marker), timeout=10)
        except AssertionError:
            raise AssertionError(f"stray processes: {strays(self.marker)}") from None
        # Sockets to dead upstreams close asynchronously; the count must come back down.
        try:
            await wait_for(lambda: open_fds() <= self.fds, timeout=5)
        except AssertionError:
            raise AssertionError(f"fds leaked: {self.fds} -> {open_fds()}: "
                                 f"{sorted(os.listdir('/proc/self/fd'))}") from None


def cmd(tmp_path: Path, model: str, *extra: str) -> str:
    """The test upstream, marked with ``tmp_path`` so that ``strays()`` can find it."""
    return upstream_cmd(model, "--pid-file", str(tmp_path / f"{model}.pid"), *extra)


async def start(llamaswap: Any, tmp_path: Path, yaml_text: str,
                adjust: Any = None) -> tuple[Any, Aftermath]:
    swapper = await llamaswap(yaml_text, adjust)
    return swapper, Aftermath(swapper, tmp_path)


async def stream_outcome(response: Any) -> tuple[bytes, Any]:
    """The streamed body and how it ended: ``None`` for a clean end, else the failure."""
    chunks: list[bytes] = []
    d = treq.collect(response, chunks.append)
    outcome: list[Any] = []
    d.addCallbacks(lambda _: outcome.append(None), outcome.append)
    await wait_for(lambda: outcome, timeout=15)
    return b"".join(chunks), outcome[0]


# -- faults during start ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_upstream_exits_during_start(llamaswap, tmp_path: Path, logged) -> None:
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  broken:
    cmd: {cmd(tmp_path, "broken", "--exit-during-start", "4")}
""")
    began = time.monotonic()
    response = await swapper.chat("broken")
    assert response.code == 500
    error = (await body_json(response))["error"]
    assert error["code"] == "model_start_failed"
    assert "exit status 4" in error["message"] and "model file not found" in error["message"]
    assert time.monotonic() - began < 5  # at once, not after the health timeout
    assert said(logged, "broken", "exited during start", "exit status 4")
    assert swapper.state("broken") is ModelState.STOPPED
    await after.check()


@pytest_twisted.ensureDeferred
async def test_upstream_never_becomes_healthy(llamaswap, tmp_path: Path, logged) -> None:
    # The loader enforces llama-swap's minimum of 15 s; the mechanism honours any value.
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  sick:
    cmd: {cmd(tmp_path, "sick", "--never-healthy")}
    unloadTimeout: 1
""", adjust=lambda c: replace(c, health_check_timeout=1.5))
    began = time.monotonic()
    response = await swapper.chat("sick")
    elapsed = time.monotonic() - began
    assert response.code == 500
    error = (await body_json(response))["error"]
    assert error["code"] == "model_start_failed" and "did not become ready" in error["message"]
    assert 1.4 < elapsed < 6
    assert said(logged, "sick", "did not become ready")
    await wait_for(lambda: swapper.state("sick") is ModelState.STOPPED, timeout=5)
    await after.check()


@pytest_twisted.ensureDeferred
async def test_port_already_taken_by_another_program(llamaswap, tmp_path: Path,
                                                     logged) -> None:
    """The model's port belongs to another HTTP server that answers 200 everywhere.

    llamaswap must not take that server's ``/health`` for the model's: it sees the port is
    taken before spawning, and the start fails with a clear error; the impostor never gets
    the request.
    """
    impostor_hits: list[bytes] = []

    class Impostor(Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            impostor_hits.append(request.uri)
            return b'{"impostor": true}'

    port = free_port()
    site: Any = Site(Impostor())
    listening: Any = reactor.listenTCP(port, site, interface="127.0.0.1")
    try:
        swapper, after = await start(llamaswap, tmp_path, f"""
models:
  squatted:
    cmd: {cmd(tmp_path, "squatted").replace("${PORT}", str(port))}
    proxy: http://127.0.0.1:{port}
""")
        response = await swapper.chat("squatted")
        body = await body_json(response)
        assert response.code == 500, (body, [line for line in logged if "squatted" in line])
        assert body["error"]["code"] == "model_start_failed"
        assert not [hit for hit in impostor_hits if hit.startswith(b"/v1/")]
        assert said(logged, "squatted", "is already in use by another program")
        assert f"127.0.0.1:{port}" in body["error"]["message"]
        await after.check()
    finally:
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_client_disconnects_during_model_start(llamaswap, tmp_path: Path,
                                                     logged) -> None:
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  sleepy:
    cmd: {cmd(tmp_path, "sleepy", "--startup-delay", "0.6")}
""")
    leaving = swapper.chat("sleepy")
    staying = [swapper.chat("sleepy") for _ in range(3)]
    await wait_for(lambda: swapper.state("sleepy") is ModelState.STARTING, timeout=5)
    leaving.cancel()
    results = await DeferredList([leaving, *staying], consumeErrors=True)
    assert not results[0][0]  # the one that left
    assert all(ok and response.code == 200 for ok, response in results[1:])
    for _, response in results[1:]:
        await treq.content(response)
    assert swapper.starts == {"sleepy": 1}  # the start went on; one spawn served them all
    assert said(logged, '"POST /v1/chat/completions HTTP/1.1" 499')
    assert swapper.service.router.in_flight("sleepy") == 0
    await after.check()


# -- faults while stopping --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_upstream_ignores_sigterm(llamaswap, tmp_path: Path, logged) -> None:
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  stubborn:
    cmd: {cmd(tmp_path, "stubborn", "--ignore-sigterm")}
    unloadTimeout: 1
""")
    assert (await swapper.chat("stubborn")).code == 200
    pid = swapper.pid("stubborn")
    began = time.monotonic()
    response = await swapper.get("/unload")
    assert response.code == 200 and await treq.content(response) == b"OK"
    assert 0.9 < time.monotonic() - began < 5
    assert pid is not None and not pid_alive(pid)
    assert said(logged, "stubborn", "sending SIGKILL")
    await after.check()


@pytest_twisted.ensureDeferred
async def test_grandchildren_that_ignore_sigterm(llamaswap, tmp_path: Path, logged) -> None:
    grandchild_file = tmp_path / "grandchild.pid"
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  family:
    cmd: {cmd(tmp_path, "family", "--grandchild", str(grandchild_file))}
    unloadTimeout: 1
""")
    assert (await swapper.chat("family")).code == 200
    grandchild = int(grandchild_file.read_text())
    assert pid_alive(grandchild)
    response = await swapper.get("/unload")
    assert response.code == 200
    await wait_for(lambda: not pid_alive(grandchild), timeout=5)
    assert said(logged, "family", "stopped")
    await after.check()


@pytest_twisted.ensureDeferred
async def test_cmd_stop_fails(llamaswap, tmp_path: Path, logged) -> None:
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  failstop:
    cmd: {cmd(tmp_path, "failstop")}
    cmdStop: {sys.executable} -c "import sys; sys.exit(3)" {tmp_path} ${{PID}}
    unloadTimeout: 5
""")
    assert (await swapper.chat("failstop")).code == 200
    pid = swapper.pid("failstop")
    began = time.monotonic()
    assert (await swapper.get("/unload")).code == 200
    assert time.monotonic() - began < 4  # SIGTERM right after cmdStop failed, no SIGKILL wait
    assert pid is not None and not pid_alive(pid)
    assert said(logged, "failstop", "cmdStop exited with 3", "sending SIGTERM")
    await after.check()


@pytest_twisted.ensureDeferred
async def test_cmd_stop_hangs(llamaswap, tmp_path: Path, logged) -> None:
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  hangstop:
    cmd: {cmd(tmp_path, "hangstop", "--ignore-sigterm")}
    cmdStop: {sys.executable} -c "import time; time.sleep(15)" {tmp_path} ${{PID}}
    unloadTimeout: 1
""")
    assert (await swapper.chat("hangstop")).code == 200
    pid = swapper.pid("hangstop")
    began = time.monotonic()
    assert (await swapper.get("/unload")).code == 200
    assert 0.9 < time.monotonic() - began < 5
    assert pid is not None and not pid_alive(pid)
    assert said(logged, "hangstop", "sending SIGKILL")
    await after.check()  # the hanging cmdStop is not left behind either


# -- faults while serving --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_upstream_crashes_mid_stream(llamaswap, tmp_path: Path, logged) -> None:
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  crashy:
    cmd: {cmd(tmp_path, "crashy", "--reply", "a b c d e f g h")}
""")
    response = await swapper.post("/v1/chat/completions", {
        "model": "crashy", "stream": True, "test_crash_after": 2, **CHAT}, unbuffered=True)
    assert response.code == 200
    body, failure = await stream_outcome(response)
    assert failure is not None  # cut off, not a clean end: the client can tell
    assert b"data: " in body and b"[DONE]" not in body
    await wait_for(lambda: swapper.state("crashy") is ModelState.STOPPED, timeout=5)
    assert said(logged, "crashy", "response cut off")
    assert said(logged, "crashy", "exited unexpectedly", "exit status 7")
    assert swapper.service.router.in_flight("crashy") == 0
    assert swapper.starts == {"crashy": 1} and not said(logged, "replay")  # never sent again
    assert (await swapper.chat("crashy")).code == 200  # the next request restarts it
    await after.check()


@pytest_twisted.ensureDeferred
async def test_upstream_crashes_while_idle(llamaswap, tmp_path: Path, logged) -> None:
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  flaky:
    cmd: {cmd(tmp_path, "flaky", "--exit-after", "0.3")}
""")
    assert (await swapper.chat("flaky")).code == 200
    pid = swapper.pid("flaky")
    await wait_for(lambda: swapper.state("flaky") is ModelState.STOPPED, timeout=5)
    assert pid is not None and not pid_alive(pid)
    assert said(logged, "flaky", "exited unexpectedly", "exit status 3")
    response = await swapper.chat("flaky")
    assert response.code == 200
    await treq.content(response)
    assert swapper.starts == {"flaky": 2}
    await after.check()


@pytest_twisted.ensureDeferred
async def test_upstream_stops_sending_mid_stream_is_declared_hung(
        llamaswap, tmp_path: Path, logged) -> None:
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  stuck:
    cmd: {cmd(tmp_path, "stuck", "--reply", "a b c d e f g h")}
    unloadTimeout: 1
    supervision: {{hangTimeout: 1}}
""")
    response = await swapper.post("/v1/chat/completions", {
        "model": "stuck", "stream": True, "test_stall_after": 2, **CHAT}, unbuffered=True)
    assert response.code == 200
    pid = swapper.pid("stuck")
    began = time.monotonic()
    body, failure = await stream_outcome(response)
    assert failure is not None and b"[DONE]" not in body  # cut off, visibly
    assert 0.9 < time.monotonic() - began < 6
    assert pid is not None
    await wait_for(lambda: not pid_alive(pid), timeout=5)  # its process group was killed
    assert said(logged, "stuck", "no output for 1s")
    # A non-streaming request that gets no byte at all: 502 model_hung.
    response = await swapper.post("/v1/chat/completions",
                                  {"model": "stuck", "test_delay": 30, **CHAT})
    assert response.code == 502
    assert (await body_json(response))["error"]["code"] == "model_hung"
    await after.check()


@pytest_twisted.ensureDeferred
async def test_crash_loop_opens_the_circuit(llamaswap, tmp_path: Path, logged) -> None:
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  looping:
    cmd: {cmd(tmp_path, "looping", "--exit-during-start", "9")}
    supervision: {{backoff: 0.1, maxBackoff: 0.2, maxFailures: 3, failureWindow: 60}}
""")
    codes = []
    for _ in range(3):
        response = await swapper.chat("looping")
        codes.append(response.code)
        await treq.content(response)
    assert codes == [500, 500, 500]
    response = await swapper.chat("looping")
    assert response.code == 503
    error = (await body_json(response))["error"]
    assert error["code"] == "model_failing" and "exit status 9" in error["message"]
    assert 1 <= int(response.headers.getRawHeaders("retry-after")[0]) <= 60
    assert swapper.starts == {"looping": 3}  # the open circuit starts nothing
    assert said(logged, "looping", "failed 3 times")
    await after.check()


@pytest_twisted.ensureDeferred
async def test_reload_during_load_loses_no_request(llamaswap, tmp_path: Path,
                                                    logged) -> None:
    text = f"""
models:
  steady:
    cmd: {cmd(tmp_path, "steady", "--reply", "a b c")}
    ttl: 0
"""
    swapper, after = await start(llamaswap, tmp_path, text)
    assert (await swapper.chat("steady")).code == 200
    pid = swapper.pid("steady")
    config_path = tmp_path / "config.yaml"
    outcomes: list[Any] = []

    async def client() -> None:
        for _ in range(8):
            response = await swapper.post("/v1/chat/completions",
                                          {"model": "steady", "stream": True, **CHAT},
                                          unbuffered=True)
            outcomes.append((response.code, *(await stream_outcome(response))))

    async def reload(old: str, new: str) -> None:
        await wait_for(lambda: swapper.service.router.in_flight("steady") > 0, timeout=5)
        config_path.write_text(config_path.read_text().replace(old, new))
        response = await swapper.client.post(swapper.url + "/api/config/reload")
        assert response.code == 200, await treq.text_content(response)

    clients = [Deferred.fromCoroutine(client()) for _ in range(4)]
    await reload("ttl: 0", "ttl: 300")  # a live setting: the model keeps running
    assert swapper.pid("steady") == pid
    await reload("a b c", "a b c d")  # a launch setting: restarts once the requests finish
    await DeferredList(clients, consumeErrors=False)
    assert len(outcomes) == 32
    assert all(code == 200 and failure is None and b"[DONE]" in body
               for code, body, failure in outcomes), [o for o in outcomes if o[0] != 200][:3]
    response = await swapper.chat("steady")
    assert response.code == 200 and b"a b c d" in await treq.content(response)
    assert swapper.pid("steady") != pid and not pid_alive(pid)  # the new command runs
    assert said(logged, "config reloaded")
    await after.check()


@pytest_twisted.ensureDeferred
async def test_500_concurrent_streaming_clients_during_a_swap(llamaswap, tmp_path: Path,
                                                              logged) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  one:
    cmd: {cmd(tmp_path, "one", "--reply", "a b c")}
    concurrencyLimit: 40
  two:
    cmd: {cmd(tmp_path, "two", "--reply", "a b c")}
    concurrencyLimit: 40
""")
    assert (await swapper.chat("one")).code == 200
    baseline_rss = rss_mb()

    async def one_client(index: int) -> tuple[int, bool]:
        model = "one" if index % 2 else "two"  # half of them force a swap, twice over
        response = await swapper.post("/v1/chat/completions",
                                      {"model": model, "stream": True, **CHAT}, unbuffered=True)
        if response.code != 200:
            body = await body_json(response)
            assert response.code == 429 and response.headers.getRawHeaders("retry-after")
            assert body["error"]["code"] == "concurrency_limit"
            return response.code, True
        body, failure = await stream_outcome(response)
        return 200, failure is None and b"[DONE]" in body

    results = await DeferredList([Deferred.fromCoroutine(one_client(i)) for i in range(500)],
                                 consumeErrors=True)
    failures = [r for ok, r in results if not ok]
    assert not failures, failures[:3]
    outcomes = [r for _, r in results]
    assert all(complete for _, complete in outcomes)
    served = sum(1 for code, _ in outcomes if code == 200)
    assert served >= 80 and served + sum(1 for c, _ in outcomes if c == 429) == 500
    assert swapper.service.router.in_flight("one") == swapper.service.router.in_flight("two") == 0
    assert rss_mb() < baseline_rss + 80  # nothing of 500 requests is kept
    await after.check()


@pytest_twisted.ensureDeferred
async def test_model_killed_by_sigkill_is_named_in_the_log(llamaswap, tmp_path: Path,
                                                          logged) -> None:
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  victim:
    cmd: {cmd(tmp_path, "victim")}
""")
    assert (await swapper.chat("victim")).code == 200
    model_pid = swapper.service.processes["victim"].model_pid
    assert model_pid is not None
    os.kill(model_pid, signal.SIGKILL)
    await wait_for(lambda: swapper.state("victim") is ModelState.STOPPED, timeout=10)
    assert said(logged, "victim", "exited unexpectedly", "killed by signal 9")
    assert not said(logged, "exit status 1")
    await after.check()


@pytest_twisted.ensureDeferred
async def test_unload_kills_a_grandchild_that_left_the_group(llamaswap, tmp_path: Path,
                                                             logged) -> None:
    polite, stubborn = tmp_path / "polite-gc.pid", tmp_path / "stubborn-gc.pid"
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  polite:
    cmd: {cmd(tmp_path, "polite", "--setsid-grandchild", str(polite))}
  stubborn:
    cmd: {cmd(tmp_path, "stubborn", "--ignore-sigterm", "--setsid-grandchild", str(stubborn))}
    unloadTimeout: 1
""")
    for model, pid_file in (("polite", polite), ("stubborn", stubborn)):
        assert (await swapper.chat(model)).code == 200
        grandchild = int(pid_file.read_text())
        assert os.getsid(grandchild) == grandchild  # out of the model's group and session
        response = await swapper.client.post(f"{swapper.url}/api/models/unload/{model}")
        assert response.code == 200, await treq.text_content(response)
        await treq.content(response)
        await wait_for(lambda m=model: swapper.state(m) is ModelState.STOPPED, timeout=10)
        # The keeper killed and reaped it before it exited: gone the moment the model is.
        assert not Path(f"/proc/{grandchild}").exists()
    assert said(logged, "stubborn", "sending SIGKILL")
    assert said(logged, "stubborn", "stopped", "killed by signal 9")
    await after.check()


@pytest_twisted.ensureDeferred
async def test_unload_all_kills_a_grandchild_that_left_the_group(llamaswap, tmp_path: Path
                                                                 ) -> None:
    pid_file = tmp_path / "gc.pid"
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  family:
    cmd: {cmd(tmp_path, "family", "--setsid-grandchild", str(pid_file))}
""")
    assert (await swapper.chat("family")).code == 200
    grandchild = int(pid_file.read_text())
    response = await swapper.get("/unload")
    assert response.code == 200 and await treq.content(response) == b"OK"
    assert not Path(f"/proc/{grandchild}").exists()
    await after.check()


@pytest_twisted.ensureDeferred
async def test_requests_that_reach_a_dead_model_are_served_by_its_restart(
        llamaswap, tmp_path: Path, logged) -> None:
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  phoenix:
    cmd: {cmd(tmp_path, "phoenix", "--reply", "a b c")}
    supervision: {{backoff: 0.1}}
""")
    observability = swapper.service.observability
    rows: list[dict[str, Any]] = []
    record = observability.record
    observability.record = lambda row, capture: (rows.append(row), record(row, capture))
    assert (await swapper.chat("phoenix")).code == 200  # a kept-alive connection stays
    process = swapper.service.processes["phoenix"]
    keeper, model_pid = process.pid, process.model_pid
    assert keeper is not None and model_pid is not None
    # The exit is noticed late: the keeper is stopped, so the dead model is not reaped and
    # llamaswap still takes it for ready while requests arrive.
    os.kill(keeper, signal.SIGSTOP)
    try:
        os.kill(model_pid, signal.SIGKILL)
        await wait_for(process.server_gone, timeout=10)
        assert swapper.state("phoenix") is ModelState.READY
        plain = [swapper.chat("phoenix") for _ in range(3)]
        streamed = swapper.post("/v1/chat/completions",
                                {"model": "phoenix", "stream": True, **CHAT}, unbuffered=True)
        await wait_for(lambda: sum("replay 1" in line for line in logged) >= 4, timeout=15)
    finally:
        os.kill(keeper, signal.SIGCONT)
    for d in plain:
        response = await d
        assert response.code == 200, await treq.text_content(response)
        assert "a b c" in (await body_json(response))["choices"][0]["message"]["content"]
    response = await streamed
    assert response.code == 200
    body, failure = await stream_outcome(response)
    assert failure is None and b"[DONE]" in body
    assert swapper.starts == {"phoenix": 2}
    assert said(logged, "phoenix", "exited unexpectedly", "killed by signal 9")
    assert not said(logged, '" 502 ')
    await wait_for(lambda: len(rows) >= 5, timeout=5)
    assert [row["status"] for row in rows] == [200] * 5  # one activity row per request
    await after.check()


@pytest_twisted.ensureDeferred
async def test_a_model_that_keeps_refusing_gets_the_normal_error(llamaswap, tmp_path: Path,
                                                                 logged) -> None:
    # Its server listens on another port than the one llamaswap sends to: every connection
    # is refused while the process lives on. Replays are bounded; then the usual 502.
    dead_port = free_port()
    swapper, after = await start(llamaswap, tmp_path, f"""
models:
  deaf:
    cmd: {cmd(tmp_path, "deaf")}
    proxy: http://127.0.0.1:{dead_port}
    checkEndpoint: none
""")
    response = await swapper.chat("deaf")
    assert response.code == 502
    assert (await body_json(response))["error"]["code"] == "upstream_unavailable"
    assert said(logged, "deaf", "replay 2") and not said(logged, "replay 3")
    assert swapper.starts == {"deaf": 1} and swapper.state("deaf") is ModelState.READY
    await after.check()


# -- llamaswap itself killed -------------------------------------------------------------------


def twistd(config: Path, state: Path, port: int, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", "llamaswap", "-c", str(config),
         "-l", f"tcp:{port}:interface=127.0.0.1", "--state-file", str(state),
         "--drain-timeout", "2"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def write_config(tmp_path: Path, models: dict[str, str], preload: list[str]) -> Path:
    lines = [f"startPort: {free_port()}", "models:"]
    for name, extra in models.items():
        lines += [f"  {name}:", f"    cmd: {cmd(tmp_path, name, *extra.split())}",
                  "    unloadTimeout: 1"]
    if preload:
        lines += ["hooks:", "  on_startup:", f"    preload: [{', '.join(preload)}]"]
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def wait_pid_file(path: Path, timeout: float = 15) -> int:
    await wait_for(lambda: path.exists() and path.read_text().strip(), timeout=timeout)
    return int(path.read_text())


async def output_of(proc: subprocess.Popen[bytes]) -> str:
    from twisted.internet.threads import deferToThread

    out, _ = await deferToThread(proc.communicate, None, 30)
    return out.decode(errors="replace")


@pytest_twisted.ensureDeferred
async def test_llamaswap_sigkilled_with_models_running_then_restarted(tmp_path: Path) -> None:
    config = write_config(tmp_path, {
        "alpha": f"--setsid-grandchild {tmp_path / 'gc.pid'}", "beta": ""}, preload=["alpha"])
    state = tmp_path / "state.json"
    port = free_port()
    first = twistd(config, state, port, tmp_path)
    try:
        alpha = await wait_pid_file(tmp_path / "alpha.pid")
        grandchild = await wait_pid_file(tmp_path / "gc.pid")
        await wait_for(lambda: "alpha" in state.read_text() if state.exists() else False,
                       timeout=15)
        recorded = json.loads(state.read_text())
        assert recorded["owner"] == first.pid and "alpha" in recorded["groups"]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        await wait_for(lambda: not pid_alive(alpha), timeout=5)  # died with llamaswap
        await wait_for(lambda: not pid_alive(grandchild), timeout=5)  # though out of group
        await wait_for(lambda: not strays(str(tmp_path)), timeout=5)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    second = twistd(config, state, port, tmp_path)
    try:
        await wait_for(lambda: json.loads(state.read_text()).get("owner") == second.pid
                       if state.exists() else False, timeout=15)
        await wait_for(lambda: "alpha" in json.loads(state.read_text())["groups"], timeout=15)
        current = json.loads(state.read_text())
        assert set(current["groups"]) == {"alpha"}  # the dead run's entries are gone
        assert current["groups"]["alpha"]["pgid"] != recorded["groups"]["alpha"]["pgid"]
    finally:
        second.send_signal(signal.SIGTERM)
        output = await output_of(second)
    assert second.returncode == -signal.SIGTERM, output
    assert not strays(str(tmp_path)), output


@pytest_twisted.ensureDeferred
async def test_sigterm_to_llamaswap_during_a_swap(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"alpha": "", "beta": "--startup-delay 1"},
                          preload=["alpha"])
    port = free_port()
    proc = twistd(config, tmp_path / "state.json", port, tmp_path)
    try:
        await wait_pid_file(tmp_path / "alpha.pid")
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        await wait_for(lambda: _port_open(port), timeout=15)
        swap = treq.post(url, json={"model": "beta", **CHAT})
        outcome: list[Any] = []
        swap.addBoth(outcome.append)
        beta = await wait_pid_file(tmp_path / "beta.pid")  # the swap is under way
        proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: outcome, timeout=15)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        output = await output_of(proc)
    assert proc.returncode == -signal.SIGTERM, output
    response = outcome[0]
    # The waiting client is answered (503 while shutting down), never left hanging.
    assert not isinstance(response, Exception) and hasattr(response, "code"), response
    assert response.code == 503
    assert "stopping" in output
    assert not pid_alive(beta)
    assert not strays(str(tmp_path)), output


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest_twisted.ensureDeferred
async def test_survivors_of_a_dead_keeper_and_llamaswap_are_reaped_at_restart(
        tmp_path: Path) -> None:
    """The keeper and then llamaswap are SIGKILLed: nothing was left to clean up, and two
    grandchildren survive, one in the model's group ignoring SIGTERM, one that called
    setsid. The next llamaswap with the same state file finds and kills both."""
    in_group, out_of_group = tmp_path / "in-group.pid", tmp_path / "setsid.pid"
    config = write_config(tmp_path, {"alpha": f"--grandchild {in_group} "
                                              f"--setsid-grandchild {out_of_group}"},
                          preload=["alpha"])
    state = tmp_path / "state.json"
    port = free_port()
    first = twistd(config, state, port, tmp_path)
    try:
        alpha = await wait_pid_file(tmp_path / "alpha.pid")
        grandchildren = [await wait_pid_file(in_group), await wait_pid_file(out_of_group)]
        await wait_for(lambda: "alpha" in state.read_text() if state.exists() else False,
                       timeout=15)
        keeper = json.loads(state.read_text())["groups"]["alpha"]["pgid"]
        first.send_signal(signal.SIGSTOP)  # so that it cannot clean up after the keeper
        os.kill(keeper, signal.SIGKILL)
        await wait_for(lambda: not pid_alive(alpha), timeout=10)  # its death signal
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert all(pid_alive(pid) for pid in grandchildren)  # the orphans of the issue
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    second = twistd(config, state, port, tmp_path)
    try:
        await wait_for(lambda: not any(pid_alive(pid) for pid in grandchildren), timeout=20)
    finally:
        second.send_signal(signal.SIGTERM)
        output = await output_of(second)
    assert second.returncode == -signal.SIGTERM, output
    assert "left behind by a previous llamaswap" in output, output
    assert not strays(str(tmp_path)), output
