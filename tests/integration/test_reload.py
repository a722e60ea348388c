"""Config reload without downtime: live settings at once, relaunches after draining."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest_twisted
import treq
from conftest import body_json, pid_alive, sleep, upstream_cmd, wait_for
from twisted.internet.defer import Deferred, DeferredList

from llamaswap.policy import ModelState


def config(reply_a: str = "first", ttl: int = 0, extra: str = "") -> str:
    return textwrap.dedent(f"""
        models:
          a:
            cmd: {upstream_cmd("a", "--reply", reply_a)}
            ttl: {ttl}
          b:
            cmd: {upstream_cmd("b")}
        """) + extra


def rewrite(swapper, text: str, port: int | None = None) -> None:  # noqa: ANN001
    """Write a new config, keeping the ports (so only what the test changes, changes)."""
    port = port or swapper.service.config.start_port
    Path(swapper.service.config.path).write_text(f"startPort: {port}\n" + text)


async def reply_of(swapper, model: str) -> str:  # noqa: ANN001
    response = await swapper.chat(model)
    assert response.code == 200
    return str((await body_json(response))["choices"][0]["message"]["content"])


async def reload_via_api(swapper) -> dict:  # noqa: ANN001
    response = await swapper.post("/api/config/reload", b"")
    return {"status": response.code, **(await body_json(response))}


@pytest_twisted.ensureDeferred
async def test_live_settings_apply_without_restarting_the_model(llamaswap) -> None:
    swapper = await llamaswap(config())
    assert await reply_of(swapper, "a") == "first"
    pid = swapper.pid("a")
    rewrite(swapper, config(ttl=1))
    result = await reload_via_api(swapper)
    assert result["status"] == 200 and result["changes"]["updated"] == ["a"]
    assert swapper.pid("a") == pid  # same process, still serving
    await wait_for(lambda: swapper.state("a") is ModelState.STOPPED, timeout=5)  # new ttl


@pytest_twisted.ensureDeferred
async def test_changed_command_restarts_after_the_request_in_flight_finishes(llamaswap) -> None:
    swapper = await llamaswap(config())
    assert await reply_of(swapper, "a") == "first"
    old_pid = swapper.pid("a")
    in_flight = swapper.chat("a", test_delay=1.0)
    await sleep(0.3)
    rewrite(swapper, config(reply_a="second"))
    result = await reload_via_api(swapper)
    assert result["changes"]["restart"] == ["a"]
    assert pid_alive(old_pid)  # draining, not cut off
    finished = await in_flight
    assert finished.code == 200
    assert (await body_json(finished))["choices"][0]["message"]["content"] == "first"
    assert await reply_of(swapper, "a") == "second"  # the relaunched model
    assert swapper.pid("a") != old_pid and not pid_alive(old_pid)


@pytest_twisted.ensureDeferred
async def test_removed_and_added_models(llamaswap) -> None:
    swapper = await llamaswap(config())
    assert await reply_of(swapper, "b") == "You said: hello"
    b_pid = swapper.pid("b")
    rewrite(swapper, textwrap.dedent(f"""
        models:
          a:
            cmd: {upstream_cmd("a", "--reply", "first")}
            ttl: 0
          c:
            cmd: {upstream_cmd("c", "--reply", "new")}
        """))
    result = await reload_via_api(swapper)
    assert result["changes"]["removed"] == ["b"] and result["changes"]["added"] == ["c"]
    await wait_for(lambda: not pid_alive(b_pid), timeout=5)
    assert (await swapper.chat("b")).code == 404
    assert await reply_of(swapper, "c") == "new"
    listed = [m["id"] for m in (await body_json(await swapper.get("/v1/models")))["data"]]
    assert "b" not in listed and "c" in listed


@pytest_twisted.ensureDeferred
async def test_an_invalid_config_is_refused_and_the_old_one_keeps_running(llamaswap) -> None:
    swapper = await llamaswap(config())
    assert await reply_of(swapper, "a") == "first"
    Path(swapper.service.config.path).write_text("models:\n  a:\n    ttl: -3\n")
    result = await reload_via_api(swapper)
    assert result["status"] == 400
    assert "models.a.ttl" in result["error"]["message"]
    assert await reply_of(swapper, "a") == "first"


@pytest_twisted.ensureDeferred
async def test_watched_config_file_reloads_by_itself(llamaswap) -> None:
    swapper = await llamaswap(config())
    swapper.service.watch_config(interval=0.1)
    assert await reply_of(swapper, "a") == "first"
    rewrite(swapper, config(reply_a="watched"))
    await wait_for(lambda: swapper.service.config.models["a"].cmd[-1] == "watched", timeout=5)
    assert await reply_of(swapper, "a") == "watched"


@pytest_twisted.ensureDeferred
async def test_a_reload_under_steady_load_loses_no_request(llamaswap) -> None:
    swapper = await llamaswap(config())
    assert await reply_of(swapper, "a") == "first"
    codes: list[int] = []
    stop = False

    async def client() -> None:
        while not stop:
            response = await swapper.chat("a")
            codes.append(response.code)
            await treq.content(response)

    clients = [Deferred.fromCoroutine(client()) for _ in range(3)]
    await sleep(0.5)
    rewrite(swapper, config(reply_a="second", ttl=30))
    assert (await reload_via_api(swapper))["changes"]["restart"] == ["a"]
    await sleep(2.0)
    stop = True
    await DeferredList(clients)
    assert len(codes) > 10 and set(codes) == {200}, json.dumps(codes)
    assert await reply_of(swapper, "a") == "second"


def _stable_config(*models: str) -> str:
    """``models`` in one group that runs them side by side, each on its own ``${PORT}``."""
    entries = "".join(f"  {m}:\n    cmd: {upstream_cmd(m)}\n" for m in models)
    return (f"models:\n{entries}groups:\n  side-by-side:\n    swap: false\n"
            f"    members: [{', '.join(models)}]\n")


@pytest_twisted.ensureDeferred
async def test_adding_and_removing_models_leaves_a_stream_in_flight_and_its_port_alone(
        llamaswap) -> None:
    swapper = await llamaswap(_stable_config("a", "c"))
    assert await reply_of(swapper, "a") == "You said: hello"
    assert await reply_of(swapper, "c") == "You said: hello"
    a_pid, a_port, c_pid = swapper.pid("a"), swapper.service.config.models["a"].port, \
        swapper.pid("c")
    response = await swapper.get("/upstream/a/slow?n=20&delay=0.1", unbuffered=True)
    assert response.code == 200
    body = treq.content(response)
    # "0b" sorts before "a": allocated in sorted order it would have taken a's port
    rewrite(swapper, _stable_config("0b", "a"))
    result = await reload_via_api(swapper)
    assert result["status"] == 200
    changes = result["changes"]
    assert (changes["added"], changes["removed"], changes["unchanged"]) == (["0b"], ["c"], ["a"])
    assert changes["restart"] == []
    assert swapper.service.config.models["a"].port == a_port
    assert swapper.service.config.models["0b"].port not in (None, a_port)
    chunks = (await body).decode().splitlines()
    assert chunks == [f"chunk-{i}" for i in range(20)]  # the whole stream, uncut
    assert swapper.pid("a") == a_pid and pid_alive(a_pid)
    await wait_for(lambda: not pid_alive(c_pid), timeout=10)
    assert await reply_of(swapper, "a") == "You said: hello"
    assert swapper.pid("a") == a_pid
    assert await reply_of(swapper, "0b") == "You said: hello"
    assert swapper.pid("a") == a_pid  # b started beside it, a still the same process


@pytest_twisted.ensureDeferred
async def test_one_pid_per_model_the_servers_in_running_and_events(llamaswap) -> None:
    swapper = await llamaswap(_stable_config("a"))
    assert await reply_of(swapper, "a") == "You said: hello"
    process = swapper.service.processes["a"]
    server_pid = process.model_pid
    assert server_pid is not None and server_pid != process.pid  # the keeper is not named
    running = await body_json(await swapper.get("/running"))
    assert [m.get("pid") for m in running["running"]] == [server_pid]
    status = swapper.service.observability.model_status()
    assert [m["pid"] for m in status if m["id"] == "a"] == [server_pid]
