"""End to end on loopback: real llamaswap, real upstream processes, a real HTTP client."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest_twisted
import treq
from conftest import body_json, pid_alive, sleep, upstream_cmd, wait_for
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.logger import globalLogPublisher
from twisted.web.client import Agent, ResponseDone

from llamaswap.config import parse_config
from llamaswap.policy import ModelState
from llamaswap.service import LlamaSwapService

TWO_MODELS = f"""
models:
  alpha:
    cmd: {upstream_cmd("alpha")}
    aliases: [first]
  beta:
    cmd: {upstream_cmd("beta")}
"""


@pytest_twisted.ensureDeferred
async def test_chat_completion_starts_the_model_and_answers(llamaswap) -> None:
    swapper = await llamaswap(TWO_MODELS)
    response = await swapper.chat("alpha")
    assert response.code == 200
    body = await body_json(response)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"]
    assert swapper.state("alpha") is ModelState.READY


@pytest_twisted.ensureDeferred
async def test_alias_resolves_to_its_model(llamaswap) -> None:
    swapper = await llamaswap(TWO_MODELS)
    response = await swapper.chat("first")
    assert response.code == 200
    assert swapper.state("alpha") is ModelState.READY


@pytest_twisted.ensureDeferred
async def test_swap_a_to_b_stops_a_process(llamaswap) -> None:
    swapper = await llamaswap(TWO_MODELS)
    assert (await swapper.chat("alpha")).code == 200
    alpha_pid = swapper.pid("alpha")
    assert alpha_pid and pid_alive(alpha_pid)
    response = await swapper.chat("beta")
    assert response.code == 200
    await treq.content(response)
    assert swapper.state("alpha") is ModelState.STOPPED
    assert not pid_alive(alpha_pid)
    running = await body_json(await swapper.get("/running"))
    assert [r["model"] for r in running["running"]] == ["beta"]


@pytest_twisted.ensureDeferred
async def test_stream_chunks_arrive_before_the_upstream_finishes(llamaswap) -> None:
    swapper = await llamaswap(f"""
models:
  slow:
    cmd: {upstream_cmd("slow", "--token-delay", "0.15", "--reply", "one two three four five")}
""")
    await treq.content(await swapper.chat("slow"))  # warm: measure streaming, not start-up
    arrivals: list[tuple[float, bytes]] = []

    class Collect(Protocol):
        def __init__(self) -> None:
            self.done: Deferred[None] = Deferred()

        def dataReceived(self, data: bytes) -> None:
            arrivals.append((time.monotonic(), data))

        def connectionLost(self, reason: object = None) -> None:
            self.done.callback(None)

    response = await swapper.post(
        "/v1/chat/completions",
        {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        unbuffered=True)
    assert response.code == 200, await treq.content(response)
    assert response.headers.getRawHeaders(b"x-accel-buffering") == [b"no"]
    collector = Collect()
    response.deliverBody(collector)
    await collector.done
    text = b"".join(chunk for _, chunk in arrivals)
    assert text.rstrip().endswith(b"data: [DONE]")
    assert len(arrivals) >= 4
    assert arrivals[-1][0] - arrivals[0][0] > 0.45  # chunks were spread out, not buffered


@pytest_twisted.ensureDeferred
async def test_several_cold_requests_cause_one_spawn(llamaswap) -> None:
    swapper = await llamaswap(TWO_MODELS)
    responses = await gatherResults([swapper.chat("alpha") for _ in range(6)])
    assert [r.code for r in responses] == [200] * 6
    for r in responses:
        await treq.content(r)
    assert swapper.starts == {"alpha": 1}


@pytest_twisted.ensureDeferred
async def test_mixed_concurrent_requests_all_answered_never_two_swap_members_at_once(
        llamaswap) -> None:
    swapper = await llamaswap(TWO_MODELS)
    both_running: list[bool] = []

    def watch(process, old, new) -> None:
        states = [p.state for p in swapper.service.processes.values()]
        both_running.append(states.count(ModelState.READY) > 1)

    for process in swapper.service.processes.values():
        process.add_observer(watch)
    models = ["alpha", "beta", "alpha", "beta", "first", "beta"]
    responses = await gatherResults([swapper.chat(m) for m in models])
    bodies = [await body_json(r) for r in responses]
    assert [r.code for r in responses] == [200] * len(models)
    # The upstream reports its own --model, so an alias shows up as the model it names.
    assert [b["model"] for b in bodies] == [{"first": "alpha"}.get(m, m) for m in models]
    assert not any(both_running)


@pytest_twisted.ensureDeferred
async def test_grandchildren_are_killed_on_stop(llamaswap, tmp_path: Path) -> None:
    grandchild_file = tmp_path / "grandchild.pid"
    swapper = await llamaswap(f"""
models:
  family:
    cmd: {upstream_cmd("family", "--grandchild", str(grandchild_file))}
""")
    assert (await swapper.chat("family")).code == 200
    grandchild = int(grandchild_file.read_text())
    assert pid_alive(grandchild)
    response = await swapper.get("/unload")
    assert response.code == 200 and await treq.content(response) == b"OK"
    await wait_for(lambda: not pid_alive(grandchild), timeout=5)


@pytest_twisted.ensureDeferred
async def test_sigterm_ignoring_model_is_killed_after_unload_timeout(llamaswap) -> None:
    swapper = await llamaswap(f"""
models:
  stubborn:
    cmd: {upstream_cmd("stubborn", "--ignore-sigterm")}
    unloadTimeout: 1
""")
    assert (await swapper.chat("stubborn")).code == 200
    pid = swapper.pid("stubborn")
    started = time.monotonic()
    await swapper.get("/unload")
    elapsed = time.monotonic() - started
    assert not pid_alive(pid)
    assert 0.9 < elapsed < 5


@pytest_twisted.ensureDeferred
async def test_over_concurrency_limit_gets_429_with_retry_after(llamaswap) -> None:
    swapper = await llamaswap(f"""
models:
  single:
    cmd: {upstream_cmd("single")}
    concurrencyLimit: 1
""")
    slow = swapper.chat("single", test_delay=2.0)
    await wait_for(lambda: swapper.service.router.in_flight("single") == 1, timeout=20)
    response = await swapper.chat("single")
    assert response.code == 429
    assert response.headers.getRawHeaders(b"retry-after") == [b"1"]
    body = await body_json(response)
    assert body["error"]["code"] == "concurrency_limit"
    assert (await slow).code == 200


@pytest_twisted.ensureDeferred
async def test_unknown_model_is_404_and_bad_json_is_400_and_nothing_starts(llamaswap) -> None:
    swapper = await llamaswap(TWO_MODELS)
    response = await swapper.chat("nope")
    assert response.code == 404
    assert (await body_json(response))["error"]["type"] == "invalid_request_error"
    response = await swapper.post("/v1/chat/completions", b'{"model": "alpha", ')
    assert response.code == 400
    assert "not valid JSON" in (await body_json(response))["error"]["message"]
    response = await swapper.post("/v1/chat/completions", {"messages": []})
    assert response.code == 400
    assert swapper.starts == {}


@pytest_twisted.ensureDeferred
async def test_json_body_without_json_content_type_is_understood(llamaswap) -> None:
    swapper = await llamaswap(TWO_MODELS)
    body = json.dumps({"model": "alpha", "messages": [{"role": "user", "content": "x"}]})
    response = await swapper.post("/v1/chat/completions", body.encode(),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.code == 200


@pytest_twisted.ensureDeferred
async def test_use_model_name_rewrites_the_body_with_correct_length(llamaswap) -> None:
    swapper = await llamaswap(f"""
models:
  local:
    cmd: {upstream_cmd("local")}
    useModelName: upstream-name/v2
""")
    response = await swapper.chat("local", test_echo=True, note="ünïcode")
    assert response.code == 200
    echoed = await body_json(response)
    sent = json.loads(echoed["body"])
    assert sent["model"] == "upstream-name/v2" and sent["note"] == "ünïcode"
    assert int(echoed["headers"]["content-length"]) == echoed["body_length"]


@pytest_twisted.ensureDeferred
async def test_upstream_path_forwards_any_method_and_keeps_escaping(llamaswap) -> None:
    swapper = await llamaswap(f"""
models:
  org/model-1:
    cmd: {upstream_cmd("org/model-1")}
""")
    response = await swapper.client.put(swapper.url + "/upstream/org/model-1/echo/a%2Fb?x=1",
                                        data=b"payload")
    echoed = await body_json(response)
    assert echoed["method"] == "PUT"
    assert echoed["path"] == "/echo/a%2Fb?x=1"
    assert echoed["body"] == "payload"
    response = await swapper.get("/upstream/org%2Fmodel-1/echo-headers")
    headers = await body_json(response)
    assert "x-forwarded-for" in headers and headers.get("connection") != "upgrade"
    response = await swapper.get("/upstream/org/model-1?q=1", allow_redirects=False)
    assert response.code == 301
    assert response.headers.getRawHeaders(b"location") == [b"/upstream/org/model-1/?q=1"]
    response = await swapper.post("/upstream/org/model-1", b"", allow_redirects=False)
    assert response.code == 308


@pytest_twisted.ensureDeferred
async def test_models_list_shape(llamaswap) -> None:
    swapper = await llamaswap(f"""
includeAliasesInList: true
models:
  alpha:
    cmd: {upstream_cmd("alpha")}
    aliases: [first]
    name: Alpha
    metadata: {{family: test}}
  hidden:
    cmd: {upstream_cmd("hidden")}
    unlisted: true
""")
    body = await body_json(await swapper.get("/v1/models", headers={"Origin": "http://ui"}))
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == ["alpha", "first"]
    alpha = body["data"][0]
    assert alpha["name"] == "Alpha" and alpha["owned_by"] == "llamaswap"
    assert alpha["meta"]["llamaswap"] == {"family": "test", "type": "model",
                                          "aliases": ["first"]}
    assert alpha["status"] == {"value": "unloaded"}
    assert body["data"][1]["meta"]["llamaswap"] == {"type": "alias", "modelID": "alpha"}
    assert (await swapper.get("/models")).code == 200


@pytest_twisted.ensureDeferred
async def test_exit_during_start_reports_status_and_output(llamaswap) -> None:
    swapper = await llamaswap(f"""
models:
  broken:
    cmd: {upstream_cmd("broken", "--exit-during-start", "4")}
""")
    started = time.monotonic()
    response = await swapper.chat("broken")
    assert response.code == 500
    message = (await body_json(response))["error"]["message"]
    assert "exit status 4" in message and "fatal: model file not found" in message
    assert time.monotonic() - started < 5  # not the health-check timeout
    assert swapper.state("broken") is ModelState.STOPPED
    assert (await swapper.chat("broken")).code == 500
    assert swapper.starts == {"broken": 2}  # the next request tried again


@pytest_twisted.ensureDeferred
async def test_crash_while_ready_is_noticed_and_next_request_restarts(llamaswap) -> None:
    swapper = await llamaswap(f"""
models:
  flaky:
    cmd: {upstream_cmd("flaky", "--exit-after", "0.5")}
""")
    assert (await swapper.chat("flaky")).code == 200
    await wait_for(lambda: swapper.state("flaky") is ModelState.STOPPED, timeout=5)
    assert "exit status 3" in (swapper.service.processes["flaky"].last_error or "")
    assert (await swapper.chat("flaky")).code == 200
    assert swapper.starts == {"flaky": 2}


@pytest_twisted.ensureDeferred
async def test_upstream_crash_mid_stream_aborts_the_client(llamaswap) -> None:
    swapper = await llamaswap(f"""
models:
  crashy:
    cmd: {upstream_cmd("crashy", "--reply", "a b c d e f g h")}
""")
    response = await swapper.post(
        "/v1/chat/completions",
        {"model": "crashy", "stream": True, "test_crash_after": 2,
         "messages": [{"role": "user", "content": "x"}]}, unbuffered=True)
    assert response.code == 200
    outcome: list = []
    d = treq.collect(response, lambda chunk: None)
    d.addBoth(outcome.append)
    await wait_for(lambda: outcome, timeout=5)
    assert not isinstance(outcome[0], type(None))  # a failure, not a clean end
    assert outcome[0].check(Exception)
    await wait_for(lambda: swapper.state("crashy") is ModelState.STOPPED, timeout=5)
    assert swapper.service.router.in_flight("crashy") == 0


@pytest_twisted.ensureDeferred
async def test_client_disconnect_frees_the_request_at_once(llamaswap) -> None:
    swapper = await llamaswap(TWO_MODELS)
    await treq.content(await swapper.chat("alpha"))
    response = await swapper.get("/upstream/alpha/slow?n=200&delay=0.05", unbuffered=True)
    got: list[bytes] = []

    class FirstChunkThenHangUp(Protocol):
        def dataReceived(self, data: bytes) -> None:
            got.append(data)
            self.transport.stopProducing()

        def connectionLost(self, reason: object = ResponseDone()) -> None:
            pass

    response.deliverBody(FirstChunkThenHangUp())
    await wait_for(lambda: got, timeout=5)
    await wait_for(lambda: swapper.service.router.in_flight("alpha") == 0, timeout=2)


@pytest_twisted.ensureDeferred
async def test_client_leaving_during_start_does_not_abort_it_for_others(llamaswap) -> None:
    swapper = await llamaswap(f"""
models:
  sleepy:
    cmd: {upstream_cmd("sleepy", "--startup-delay", "0.5")}
""")
    leaving = swapper.chat("sleepy")
    staying = swapper.chat("sleepy")
    await sleep(0.2)
    leaving.cancel()
    results = await DeferredList([leaving, staying], consumeErrors=True)
    assert results[1][0] and results[1][1].code == 200
    assert swapper.starts == {"sleepy": 1}


@pytest_twisted.ensureDeferred
async def test_ttl_unloads_an_idle_model(llamaswap) -> None:
    swapper = await llamaswap(f"""
models:
  brief:
    cmd: {upstream_cmd("brief")}
    ttl: 1
""")
    assert (await swapper.chat("brief")).code == 200
    pid = swapper.pid("brief")
    await wait_for(lambda: swapper.state("brief") is ModelState.STOPPED, timeout=5)
    assert not pid_alive(pid)


@pytest_twisted.ensureDeferred
async def test_preload_starts_listed_models(llamaswap) -> None:
    swapper = await llamaswap(f"""
hooks:
  on_startup:
    preload: [first]
{TWO_MODELS}""")
    await wait_for(lambda: swapper.state("alpha") is ModelState.READY, timeout=10)


@pytest_twisted.ensureDeferred
async def test_api_unload_one_model_and_health(llamaswap) -> None:
    swapper = await llamaswap(TWO_MODELS)
    assert (await swapper.chat("alpha")).code == 200
    response = await swapper.post("/api/models/unload/first", b"")
    assert response.code == 200
    assert swapper.state("alpha") is ModelState.STOPPED
    assert (await swapper.post("/api/models/unload/nope", b"")).code == 404
    response = await swapper.post("/api/models/unload", b"")
    assert await body_json(response) == {"msg": "ok"}
    health = await swapper.get("/health")
    assert health.code == 200 and await treq.content(health) == b"OK"


@pytest_twisted.ensureDeferred
async def test_stop_service_leaves_no_process(llamaswap) -> None:
    swapper = await llamaswap(TWO_MODELS)
    assert (await swapper.chat("alpha")).code == 200
    pid = swapper.pid("alpha")
    await swapper.service.stopService()
    assert not pid_alive(pid)


@pytest_twisted.ensureDeferred
async def test_one_access_log_line_per_request(llamaswap) -> None:
    swapper = await llamaswap(TWO_MODELS)
    lines: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "llamaswap.access":
            lines.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        assert (await swapper.chat("first")).code == 200
        assert (await swapper.chat("nope")).code == 404
    finally:
        globalLogPublisher.removeObserver(observe)
    assert [(e["method"], e["path"], e["status"], e["model"]) for e in lines] == [
        ("POST", "/v1/chat/completions", 200, "alpha"),
        ("POST", "/v1/chat/completions", 404, "nope"),
    ]
    assert lines[0]["size"] > 0 and lines[0]["duration"] > 0


@pytest_twisted.ensureDeferred
async def test_upstream_path_accepts_an_alias(llamaswap) -> None:
    swapper = await llamaswap(TWO_MODELS)
    response = await swapper.get("/upstream/first/echo")
    assert response.code == 200
    assert (await body_json(response))["path"] == "/echo"
    assert swapper.state("alpha") is ModelState.READY


@pytest_twisted.ensureDeferred
async def test_listens_on_a_unix_socket(tmp_path: Path) -> None:
    config = parse_config(f"models:\n  m:\n    cmd: {upstream_cmd('m')}\n    proxy: http://x:1\n"
                          "    checkEndpoint: none\n", "unix.yaml")
    service = LlamaSwapService(config, reactor)
    sock = tmp_path / "llamaswap.sock"
    service.listen(f"unix:{sock}:mode=600")
    service.startService()
    try:
        client = HTTPClient(Agent.usingEndpointFactory(reactor, _UnixEndpoints(str(sock))))
        response = await client.get("http://localhost/health")
        assert response.code == 200 and await treq.content(response) == b"OK"
        assert oct(sock.stat().st_mode & 0o777) == oct(0o600)
    finally:
        await service.stopService()
    assert not sock.exists() or not _connectable(sock)


class _UnixEndpoints:
    def __init__(self, path: str) -> None:
        self._path = path

    def endpointForURI(self, uri: object) -> UNIXClientEndpoint:
        return UNIXClientEndpoint(reactor, self._path)


def _connectable(path: Path) -> bool:
    import socket
    with socket.socket(socket.AF_UNIX) as s:
        return s.connect_ex(str(path)) == 0
