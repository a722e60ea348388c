"""llama-swap's ``internal/server`` routing scenarios that came with its newer keys and
routes: ``capabilities`` in the model list and events, ``upstream.ignorePaths``,
``compat.ignoreWebsockets``, the ComfyUI routes, and the profile and selector scenarios
beyond those in ``test_go_server.py``; replayed over HTTP against a real llamaswap whose
models are the test upstream (``tests/upstream.py``) or the test websocket server
(``tests/wsecho.py``).
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest_twisted
import treq
from twisted.internet.defer import Deferred, DeferredList

from llamaswap.policy import ModelState
from tests.compat.support import (
    Follow,
    HoldingPeer,
    harness,
    open_upgrade,
    own_port_model,
    wsecho_cmd,
)

body_json = harness.body_json
wait_for = harness.wait_for


async def listed(swapper: Any) -> dict[str, Any]:
    response = await swapper.get("/v1/models")
    assert response.code == 200
    return {record["id"]: record for record in (await body_json(response))["data"]}


async def model_status(swapper: Any) -> list[dict[str, Any]]:
    """The first ``modelStatus`` event of a fresh ``/api/events`` stream."""
    response = await swapper.get("/api/events", unbuffered=True)
    events = Follow()
    response.deliverBody(events)
    await wait_for(lambda: any(kind == "modelStatus" for kind, _ in events.events()),
                   timeout=20)
    events.stop()
    return next(data for kind, data in events.events() if kind == "modelStatus")


async def inflight_now(swapper: Any) -> list[dict[str, Any]]:
    return list((await body_json(await swapper.get("/api/inflight")))["requests"])


# --- api_test.go: capabilities ---------------------------------------------------------------

CAPABILITY_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    # name: (the capabilities block, what the listing shows; None: the key is absent)
    "all": ("{in: [text, image], out: [text, audio], tools: true, context: 100000}", {
        "architecture": {"input_modalities": ["text", "image"],
                         "output_modalities": ["text", "audio"],
                         "modality": "text+image->text+audio"},
        "capabilities": {"vision": True, "audio_speech": True, "function_calling": True},
        "supported_parameters": ["tools", "tool_choice"], "context_length": 100000}),
    "in_only": ("{in: [text, image]}", {
        "architecture": {"input_modalities": ["text", "image"]},
        "capabilities": {"vision": True}, "supported_parameters": None,
        "context_length": None}),
    "out_only": ("{out: [audio]}", {"architecture": {"output_modalities": ["audio"]},
                                    "capabilities": None}),
    "tools": ("{tools: true}", {"capabilities": {"function_calling": True},
                                "supported_parameters": ["tools", "tool_choice"],
                                "architecture": None}),
    "reranker": ("{reranker: true}", {"capabilities": {"reranker": True},
                                      "architecture": None}),
    "context": ("{context: 32768}", {"context_length": 32768, "architecture": None}),
    "transcription": ("{in: [audio], out: [text]}",
                      {"capabilities": {"audio_transcriptions": True}}),
    "image_generation": ("{in: [text], out: [image]}",
                         {"capabilities": {"image_generation": True}}),
    "image_to_image": ("{in: [image], out: [image]}",
                       {"capabilities": {"image_to_image": True}}),
}


@pytest_twisted.ensureDeferred
async def test_capabilities_are_rendered_in_the_model_list(llamaswap) -> None:
    """follows internal/server TestServer_HandleListModels_Capabilities"""
    blocks = "".join(f"  {name}:\n    {own_port_model(name)}\n    capabilities: {block}\n"
                     for name, (block, _) in CAPABILITY_CASES.items())
    swapper = await llamaswap(f"""
models:
{blocks}  plain:
    {own_port_model("plain")}
  with_meta:
    {own_port_model("with_meta")}
    capabilities: {{in: [text]}}
    metadata: {{architecture: dropped, capabilities: dropped, custom_field: kept}}
  meta_only:
    {own_port_model("meta_only")}
    metadata: {{architecture: kept, context_length: 4096, capabilities: kept}}
""")
    records = await listed(swapper)
    for name, (_, expected) in CAPABILITY_CASES.items():
        record = records[name]
        for key, value in expected.items():
            if value is None:
                assert key not in record, (name, key)
            elif key == "capabilities":
                assert {k: record[key].get(k) for k in value} == value, name
            else:
                assert record[key] == value, (name, key)
    plain = records["plain"]
    assert not {"architecture", "capabilities", "supported_parameters",
                "context_length"} & set(plain)
    with_meta = records["with_meta"]
    assert with_meta["architecture"]["input_modalities"] == ["text"]
    meta = with_meta["meta"]["llamaswap"]
    assert "architecture" not in meta and "capabilities" not in meta
    assert meta["custom_field"] == "kept"
    meta_only = records["meta_only"]
    assert "architecture" not in meta_only
    assert {"architecture", "context_length", "capabilities"} <= set(
        meta_only["meta"]["llamaswap"])


@pytest_twisted.ensureDeferred
async def test_capabilities_are_in_the_model_status_event(llamaswap) -> None:
    """follows internal/server TestServer_ModelStatus_Capabilities"""
    swapper = await llamaswap(f"""
models:
  m:
    {own_port_model("m")}
    capabilities: {{in: [text, image], tools: true, context: 128000}}
  plain:
    {own_port_model("plain")}
""")
    status = {entry["id"]: entry for entry in await model_status(swapper)}
    assert status["m"]["capabilities"]["vision"] is True
    assert status["m"]["capabilities"]["function_calling"] is True
    assert status["m"]["context_length"] == 128000
    assert "capabilities" not in status["plain"] and "context_length" not in status["plain"]


# --- api_test.go: upstream.ignorePaths ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ignored_paths_start_nothing_but_reach_a_ready_model_or_a_peer(
        llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_HandleUpstream_IgnorePaths"""
    swapper = await llamaswap(f"""
upstream:
  ignorePaths: ['.*\\.(js|json|css|png|gif|jpg|jpeg|txt)$']
models:
  m1:
    {own_port_model("m1")}
peers:
  box: {{proxy: "{echo_peer.url}", models: [remote]}}
""")
    refused = await swapper.get("/upstream/m1/echo/foo.js")
    assert refused.code == 409
    assert "not loaded" in (await body_json(refused))["error"]["message"]
    assert swapper.starts == {}
    served = await swapper.get("/upstream/m1/echo/v1/chat/completions")  # not ignored: starts
    assert served.code == 200
    await treq.content(served)
    assert swapper.state("m1") is ModelState.READY
    ready = await swapper.get("/upstream/m1/echo/foo.js")  # the model is ready now
    assert ready.code == 200
    assert (await body_json(ready))["path"] == "/echo/foo.js"
    peer = await swapper.get("/upstream/remote/foo.js")  # a peer's model is never "loaded"
    assert peer.code == 200
    assert (await body_json(peer))["received"]["path"] == "/foo.js"


# --- compat.ignoreWebsockets: in flight and spillover -------------------------------------


WEBSOCKETS = f"""
models:
  a:
    cmd: {wsecho_cmd()}
    compat: {{ignoreWebsockets: true}}
  b:
    cmd: {wsecho_cmd()}
  c:
    cmd: {wsecho_cmd()}
groups:
  all: {{swap: false, exclusive: false, members: [a, b, c]}}
selectors:
  balanced:
    strategy: spillover
    targets: [a, b, c]
    settings: {{spillover: 1}}
"""


async def load(swapper: Any, *models: str) -> None:
    for model in models:
        response = await swapper.get(f"/upstream/{model}/health")
        assert response.code == 200, model
        await treq.content(response)


async def hang_up(client: Any) -> None:
    client.transport.loseConnection()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_an_ignored_websocket_is_not_in_flight(llamaswap) -> None:
    """follows internal/server TestServer_HandleUpstream_InflightIgnoresConfiguredWebsocket and
    TestServer_InflightMiddleware_IgnoresConfiguredWebsocket"""
    swapper = await llamaswap(WEBSOCKETS)
    await load(swapper, "a")
    for path in ("/upstream/a/props", "/props?model=a"):
        client = await open_upgrade(swapper.port, path)
        assert client.status == 101, path
        assert await inflight_now(swapper) == [], path
        await hang_up(client)


@pytest_twisted.ensureDeferred
async def test_an_ignored_websocket_holds_no_spillover_place(llamaswap) -> None:
    """follows internal/server
    TestServer_SelectorMiddleware_IgnoredWebsocketDoesNotReserveSpillover"""
    swapper = await llamaswap(WEBSOCKETS)
    await load(swapper, "a", "b", "c")
    first = await open_upgrade(swapper.port, "/props?model=balanced")  # to a, turn 1 of 3
    second = await open_upgrade(swapper.port, "/props?model=balanced")
    assert (first.status, second.status) == (101, 101)
    # Targets equally busy take turns: had the first upgrade kept a place on a, the second
    # would have gone to the least busy, c; it went to b, which holds it (b does not
    # ignore websockets: its socket counts as a request in flight).
    status = {entry["id"]: entry for entry in await model_status(swapper)}
    assert [status[m]["inFlight"] for m in ("a", "b", "c")] == [0, 1, 0]
    for client in (first, second):
        await hang_up(client)


# --- api_test.go: ComfyUI ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_comfyui_redirects_starts_from_its_root_and_keeps_escaped_paths(llamaswap) -> None:
    """follows internal/server TestServer_HandleComfyUI"""
    swapper = await llamaswap(f"models:\n  comfyui_auto:\n    {own_port_model('comfyui_auto')}\n")
    for method, status in (("GET", 301), ("HEAD", 301), ("POST", 308)):
        response = await swapper.client.request(method, swapper.url + "/comfyui?token=value",
                                                allow_redirects=False)
        assert response.code == status, method
        assert response.headers.getRawHeaders("location") == ["/comfyui/?token=value"], method
        await treq.content(response)
    early = await swapper.get("/comfyui/api/prompt")
    assert early.code == 409
    assert "only /comfyui/ can start it" in (await body_json(early))["error"]["message"]
    assert swapper.starts == {}
    below = await swapper.get("/comfyui/echo?token=value")
    assert below.code == 409  # below the root: it cannot start ComfyUI either
    await treq.content(below)
    started = await swapper.get("/comfyui/?token=value")
    assert started.code == 200
    await treq.content(started)
    assert swapper.state("comfyui_auto") is ModelState.READY
    for target, path in (
            ("/comfyui/echo/userdata/workflows%2Fexample.json?preview=1",
             "/echo/userdata/workflows%2Fexample.json?preview=1"),
            ("/comfyui/echo/userdata/workflows%252Fexample.json",
             "/echo/userdata/workflows%252Fexample.json"),
            ("/comfyui/echo/%E2%9C%93%2Ffile.json", "/echo/%E2%9C%93%2Ffile.json")):
        response = await swapper.post(target, b"")
        assert response.code == 200, target
        assert (await body_json(response))["path"] == path, target


@pytest_twisted.ensureDeferred
async def test_comfyui_needs_a_local_model_of_that_exact_name(llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_HandleComfyUI_RequiresExactLocalModel"""
    for text in (f"models:\n  m:\n    {own_port_model('m')}\n",
                 f"peers:\n  box: {{proxy: '{echo_peer.url}', models: [comfyui_auto]}}\n"):
        swapper = await llamaswap(text)
        response = await swapper.get("/comfyui/")
        assert response.code == 404
        await treq.content(response)
    assert echo_peer.seen == []


@pytest_twisted.ensureDeferred
async def test_comfyui_needs_the_api_key(llamaswap) -> None:
    """follows internal/server TestServer_HandleComfyUI_UsesAuthentication"""
    swapper = await llamaswap("apiKeys: [secret]\n"
                              f"models:\n  comfyui_auto:\n    {own_port_model('comfyui_auto')}\n")
    refused = await swapper.get("/comfyui/")
    assert refused.code == 401
    await treq.content(refused)
    assert swapper.starts == {}
    allowed = await swapper.get("/comfyui/", headers={"Authorization": "Bearer secret"})
    assert allowed.code == 200
    await treq.content(allowed)


# --- profiles_test.go ---------------------------------------------------------------------------


def profile_config(peer_url: str) -> str:
    return f"""
models:
  real:
    {own_port_model("real")}
    name: Real Model
    filters:
      setParamsByID:
        variant: {{thinking: true}}
  hidden:
    {own_port_model("hidden")}
    name: Hidden Model
    unlisted: true
groups:
  all: {{swap: false, exclusive: false, members: [real, hidden]}}
peers:
  remote: {{proxy: "{peer_url}", models: [remote-model]}}
profiles:
  coding:
    description: Coding profile
    pins:
      public: variant
      disabled: ~
      real: hidden
      expose: hidden
      remote-model: hidden
"""


async def activate(swapper: Any, name: str | None) -> int:
    response = await swapper.client.put(swapper.url + "/api/profiles/active",
                                        data=json.dumps({"name": name}).encode())
    await treq.content(response)
    return int(response.code)


@pytest_twisted.ensureDeferred
async def test_profile_pins_are_listed_but_not_as_models(llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_Profile_ModelListings"""
    swapper = await llamaswap(profile_config(echo_peer.url))
    assert await activate(swapper, "coding") == 200
    records = await listed(swapper)
    assert "public" in records and not records["public"].get("name")
    assert records["real"]["name"] == "Real Model"
    assert records["remote/remote-model"]["name"] == "remote: remote-model"
    assert "expose" in records and not records["expose"].get("name")
    assert "disabled" not in records and "hidden" not in records
    assert records["public"]["meta"]["llamaswap"]["type"] == "profile"
    status = {entry["id"]: entry for entry in await model_status(swapper)}
    assert {"real", "hidden"} <= set(status)
    assert status["remote/remote-model"]["peerID"] == "remote"
    assert not {"public", "expose", "disabled"} & set(status)


@pytest_twisted.ensureDeferred
async def test_profile_switches_and_listings_side_by_side_all_succeed(
        llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_Profile_ConcurrentSelectionAndListing"""
    swapper = await llamaswap(profile_config(echo_peer.url))
    pending: list[Deferred[Any]] = []
    for turn in range(40):
        pending.append(Deferred.fromCoroutine(activate(swapper, "coding" if turn % 2 else None)))
        pending.append(swapper.get("/v1/models").addCallback(
            lambda response: treq.content(response).addCallback(lambda _: response.code)))
    results = await DeferredList(pending, fireOnOneErrback=True)
    assert {code for _, code in results} == {200}


@pytest_twisted.ensureDeferred
async def test_management_by_model_name_ignores_the_profile(llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_Profile_ManagementUsesConcreteModel"""
    swapper = await llamaswap(profile_config(echo_peer.url))
    for model in ("real", "hidden"):
        assert (await swapper.chat(model)).code == 200
    assert await activate(swapper, "coding") == 200  # pins real -> hidden
    log = await swapper.get("/logs/stream/real", unbuffered=True)
    assert log.code == 200  # real's own log, not hidden's
    lines = Follow()
    log.deliverBody(lines)
    assert (await swapper.post("/api/models/unload/real", b"")).code == 200
    await wait_for(lambda: swapper.pid("real") is None, timeout=30)
    assert swapper.state("hidden") is ModelState.READY
    lines.stop()


@pytest_twisted.ensureDeferred
async def test_profile_pin_through_upstream_is_recorded_as_the_model(llamaswap) -> None:
    """follows internal/server TestServer_Profile_UpstreamMetricsUseResolvedModel"""
    swapper = await llamaswap(f"""
models:
  m1:
    {own_port_model("m1")}
profiles:
  test:
    pins: {{public: m1}}
""")
    assert await activate(swapper, "test") == 200
    response = await swapper.post("/upstream/public/v1/chat/completions",
                                  {"model": "public", "messages": []})
    assert response.code == 200
    await treq.content(response)
    await wait_for(lambda: swapper.service.observability.in_flight == {})
    page: dict[str, Any] = {}

    async def stored() -> bool:
        nonlocal page
        page = await body_json(await swapper.get("/api/metrics/activity"))
        return bool(page["data"])

    for _ in range(300):
        if await stored():
            break
        await harness.sleep(0.1)
    (row,) = page["data"]
    assert row["model"] == "m1"


@pytest_twisted.ensureDeferred
async def test_profile_pin_through_upstream_keeps_the_body(llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_Profile_UpstreamPreservesBody"""
    swapper = await llamaswap(profile_config(echo_peer.url))
    assert await activate(swapper, "coding") == 200
    response = await swapper.post("/upstream/public/custom",
                                  b'{"model":"public","test_echo":true}')
    assert response.code == 200
    assert (await body_json(response))["body"] == '{"model":"public","test_echo":true}'
    assert swapper.starts == {"real": 1}


@pytest_twisted.ensureDeferred
async def test_profile_pins_rewrite_the_model_of_an_upstream_path(llamaswap) -> None:
    """follows internal/server TestServer_ProfileMiddleware_RewriteUpstreamPath"""
    swapper = await llamaswap(f"""
models:
  real:
    {own_port_model("real")}
  short:
    {own_port_model("short")}
groups:
  all: {{swap: false, exclusive: false, members: [real, short]}}
profiles:
  p:
    pins: {{public: real, author: short, author/public: real, disabled: ~}}
""")
    assert await activate(swapper, "p") == 200
    for path in ("/upstream/public/echo/x", "/upstream/author/public/echo/x",
                 "/upstream/real/echo/x"):
        response = await swapper.post(path, b"{}")
        assert response.code == 200, path
        assert (await body_json(response))["path"] == "/echo/x", path
    assert swapper.starts == {"real": 1}
    disabled = await swapper.post("/upstream/disabled/echo/x", b"{}")
    assert disabled.code == 404
    await treq.content(disabled)


# --- selector_test.go ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_spillover_with_every_target_stopping_is_503(llamaswap) -> None:
    """follows internal/server TestServer_SelectorMiddleware_AllSpilloverTargetsStopping"""
    stubborn = "--quiet --ignore-sigterm"
    swapper = await llamaswap(f"""
models:
  a:
    {own_port_model("a").replace("--quiet", stubborn, 1)}
    unloadTimeout: 60
  b:
    {own_port_model("b").replace("--quiet", stubborn, 1)}
    unloadTimeout: 60
groups:
  all: {{swap: false, exclusive: false, members: [a, b]}}
selectors:
  balanced: {{strategy: spillover, targets: [a, b], settings: {{spillover: 1}}}}
""")
    for model in ("a", "b"):
        assert (await swapper.chat(model)).code == 200
    unloading = swapper.post("/api/models/unload", b"")
    await wait_for(lambda: swapper.state("a") is ModelState.STOPPING and
                   swapper.state("b") is ModelState.STOPPING, timeout=20)
    response = await swapper.chat("balanced")
    assert response.code == 503
    assert "no available spillover targets" in (await body_json(response))["error"]["message"]
    for pid in (swapper.pid("a"), swapper.pid("b")):
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
    await unloading


@pytest_twisted.ensureDeferred
async def test_a_selector_is_not_a_model_under_upstream(llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_SelectorMiddleware_UpstreamUnsupported"""
    swapper = await llamaswap(f"""
models:
  a:
    {own_port_model("a")}
selectors:
  public: {{strategy: pin, targets: [a]}}
""")
    response = await swapper.post("/upstream/public/v1/chat/completions", {"model": "public"})
    assert response.code == 404
    await treq.content(response)
    assert swapper.starts == {}


@pytest_twisted.ensureDeferred
async def test_spillover_across_peer_models(llamaswap) -> None:
    """follows internal/server TestServer_SelectorStrategySpillover_RemoteModels"""
    peer = HoldingPeer()
    listening = peer.listen()
    try:
        swapper = await llamaswap(f"""
peers:
  remote: {{proxy: "http://127.0.0.1:{listening.getHost().port}", models: [a, b]}}
selectors:
  pool: {{strategy: spillover, targets: [remote/a, remote/b], settings: {{spillover: 1}}}}
""")
        first = swapper.chat("pool")
        await wait_for(lambda: len(peer.waiting) == 1, timeout=20)
        second = swapper.chat("pool")
        await wait_for(lambda: len(peer.waiting) == 2, timeout=20)
        assert [model for model, _ in peer.waiting] == ["a", "b"]
        peer.answer_all()
        for pending in (first, second):
            response = await pending
            assert response.code == 200
            await treq.content(response)
        third = swapper.chat("pool")
        await wait_for(lambda: len(peer.waiting) == 1, timeout=20)
        assert peer.waiting[0][0] == "a"  # both free again: the first target
        peer.answer_all()
        await treq.content(await third)
    finally:
        await listening.stopListening()
