"""llama-swap's ``internal/server`` scenarios, replayed over HTTP against a real llamaswap.

llama-swap tests its HTTP server with stub routers; here the same requests go to a real
llamaswap on loopback whose models are the test upstream (``tests/upstream.py``), and whose
peers are an in-process echo server. Each test names the Go test whose scenario it replays.
"""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
import treq

from tests.compat.support import harness, own_port_model

body_json = harness.body_json
wait_for = harness.wait_for


def one_model(name: str = "m1", extra: str = "") -> str:
    return f"models:\n  {name}:\n    {own_port_model(name)}\n{extra}"


@pytest_twisted.ensureDeferred
async def test_request_for_a_local_model_is_answered_by_it(llamaswap) -> None:
    """follows internal/server TestServer_RouteToLocalModel"""
    swapper = await llamaswap(one_model("local-model"))
    response = await swapper.chat("local-model")
    assert response.code == 200
    assert (await body_json(response))["model"] == "local-model"


@pytest_twisted.ensureDeferred
async def test_request_for_a_peer_model_goes_to_the_peer(llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_RouteToPeerModel"""
    swapper = await llamaswap(f"peers:\n  box:\n    proxy: {echo_peer.url}\n"
                              "    models: [peer-model]\n")
    response = await swapper.chat("peer-model")
    assert response.code == 200
    answer = await body_json(response)
    assert answer["peer"] is True
    assert answer["received"]["path"] == "/v1/chat/completions"


@pytest_twisted.ensureDeferred
async def test_local_model_wins_a_name_shared_with_a_peer(llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_RouteToLocalModel_PrefersLocalCollision"""
    swapper = await llamaswap(one_model("shared", f"peers:\n  box:\n    proxy: {echo_peer.url}\n"
                                                  "    models: [shared]\n"))
    answer = await body_json(await swapper.chat("shared"))
    assert answer["model"] == "shared"
    assert echo_peer.seen == []


@pytest_twisted.ensureDeferred
async def test_unknown_model_is_404_and_starts_nothing(llamaswap) -> None:
    """follows internal/server TestServer_UnknownModelReturns404"""
    swapper = await llamaswap(one_model("local-model"))
    response = await swapper.chat("unknown-model")
    assert response.code == 404
    assert "unknown-model" in await treq.text_content(response)
    assert swapper.starts == {}


@pytest_twisted.ensureDeferred
async def test_audio_api_task_reaches_the_model_without_its_prefix(llamaswap) -> None:
    """follows internal/server TestServer_AudioAPIRoutesTaskRequest,
    TestServer_AudioAPIRewritesUpstreamPath and TestServer_StripAudioAPIPrefix"""
    swapper = await llamaswap(one_model("local-audio"))
    response = await swapper.post("/audioapi/v1/tasks/run", {"model": "local-audio"})
    assert response.code == 200
    answer = await body_json(response)
    assert answer["model"] == "local-audio"
    assert answer["received"]["path"] == "/v1/tasks/run"


@pytest_twisted.ensureDeferred
async def test_unknown_path_is_404(llamaswap) -> None:
    """follows internal/server TestServer_UnknownPathReturns404"""
    swapper = await llamaswap(one_model())
    assert (await swapper.get("/does-not-exist")).code == 404


@pytest_twisted.ensureDeferred
async def test_health_answers_ok(llamaswap) -> None:
    """follows internal/server TestServer_Health"""
    swapper = await llamaswap(one_model())
    for path in ("/health", "/wol-health"):
        response = await swapper.get(path)
        assert response.code == 200, path
        assert await treq.text_content(response) == "OK", path


@pytest_twisted.ensureDeferred
async def test_cors_preflight_is_204_for_any_origin(llamaswap) -> None:
    """follows internal/server TestServer_CORSPreflight"""
    swapper = await llamaswap(one_model())
    response = await swapper.client.request("OPTIONS", swapper.url + "/v1/chat/completions")
    assert response.code == 204
    assert response.headers.getRawHeaders("access-control-allow-origin") == ["*"]


@pytest_twisted.ensureDeferred
async def test_unload_stops_every_running_model(llamaswap) -> None:
    """follows internal/server TestServer_Unload"""
    swapper = await llamaswap(one_model())
    assert (await swapper.chat("m1")).code == 200
    pid = swapper.pid("m1")
    response = await swapper.get("/unload")
    assert response.code == 200
    assert await treq.text_content(response) == "OK"
    assert swapper.pid("m1") is None and not harness.pid_alive(pid)


@pytest_twisted.ensureDeferred
async def test_running_lists_ready_models_with_their_settings(llamaswap) -> None:
    """follows internal/server TestServer_Running"""
    swapper = await llamaswap(f"""
models:
  m1:
    {own_port_model("m1")}
    ttl: 300
    name: Model One
    description: the first model
  idle:
    {own_port_model("idle")}
""")
    assert (await body_json(await swapper.get("/running")))["running"] == []
    assert (await swapper.chat("m1")).code == 200
    running = (await body_json(await swapper.get("/running")))["running"]
    assert len(running) == 1
    entry = running[0]
    config = swapper.service.config.models["m1"]
    assert {key: entry[key] for key in ("model", "state", "proxy", "ttl", "name",
                                        "description")} == {
        "model": "m1", "state": "ready", "proxy": config.proxy, "ttl": 300,
        "name": "Model One", "description": "the first model"}
    assert "upstream.py" in entry["cmd"]


@pytest_twisted.ensureDeferred
async def test_preload_starts_the_listed_model_without_a_request(llamaswap) -> None:
    """follows internal/server TestServer_Preload"""
    swapper = await llamaswap(one_model("m1", "hooks:\n  on_startup:\n    preload: [m1]\n"))
    await wait_for(lambda: swapper.state("m1").value == "ready", timeout=30)
    assert harness.pid_alive(swapper.pid("m1"))


@pytest_twisted.ensureDeferred
async def test_log_stream_of_a_model_shows_its_output(llamaswap) -> None:
    """follows internal/server TestServer_LogStream_ModelID"""
    swapper = await llamaswap(f"models:\n  mymodel:\n    cmd: sh -c 'echo hello from model;"
                              f" exec {harness.upstream_cmd('mymodel')}'\n"
                              f"    proxy: http://127.0.0.1:${{PORT}}\n")
    assert (await swapper.chat("mymodel")).code == 200
    response = await swapper.get("/logs/stream/mymodel", unbuffered=True)
    assert response.code == 200
    seen = b""

    def collect(data: bytes) -> None:
        nonlocal seen
        seen += data

    done = treq.collect(response, collect)
    await wait_for(lambda: b"hello from model" in seen, timeout=10)
    done.cancel()
    done.addErrback(lambda failure: None)


@pytest_twisted.ensureDeferred
async def test_log_stream_of_an_unknown_id_is_400(llamaswap) -> None:
    """follows internal/server TestServer_LogStream_UnknownID_Returns400"""
    swapper = await llamaswap(one_model())
    assert (await swapper.get("/logs/stream/no-such-model")).code == 400


@pytest_twisted.ensureDeferred
async def test_logs_asked_for_as_html_redirect_to_the_ui(llamaswap) -> None:
    """follows internal/server TestServer_HandleLogs_HTMLRedirect"""
    swapper = await llamaswap(one_model())
    response = await swapper.get("/logs", headers={"Accept": "text/html"},
                                 allow_redirects=False)
    assert response.code == 302
    assert response.headers.getRawHeaders("location") == ["/ui/"]


@pytest_twisted.ensureDeferred
async def test_logs_without_html_accept_is_plain_text(llamaswap) -> None:
    """follows internal/server TestServer_HandleLogs_Plain"""
    swapper = await llamaswap(one_model())
    assert (await swapper.chat("m1")).code == 200
    response = await swapper.get("/logs")
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    assert "/v1/chat/completions" in await treq.text_content(response)


# --- api_test.go -----------------------------------------------------------------------------


async def listed(swapper: Any, **kw: Any) -> dict[str, Any]:
    response = await swapper.get("/v1/models", **kw)
    assert response.code == 200
    return {record["id"]: record for record in (await body_json(response))["data"]}


@pytest_twisted.ensureDeferred
async def test_model_list_hides_unlisted_includes_peers_and_echoes_origin(
        llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_HandleListModels"""
    swapper = await llamaswap(f"""
models:
  visible:
    {own_port_model("visible")}
    name: Visible
    description: a model
  hidden:
    {own_port_model("hidden")}
    unlisted: true
peers:
  peer1:
    proxy: {echo_peer.url}
    models: [remote-model]
""")
    response = await swapper.get("/v1/models", headers={"Origin": "http://example.com"})
    assert response.headers.getRawHeaders("access-control-allow-origin") == [
        "http://example.com"]
    records = {r["id"]: r for r in (await body_json(response))["data"]}
    assert "visible" in records and "peer1/remote-model" in records
    assert "hidden" not in records
    assert records["visible"]["name"] == "Visible"
    assert records["visible"]["description"] == "a model"


@pytest_twisted.ensureDeferred
async def test_model_list_qualifies_a_name_several_peers_share(llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_HandleListModels_PeerNamespaces"""
    swapper = await llamaswap(f"""
models:
  shared:
    {own_port_model("shared")}
peers:
  cuda: {{proxy: "{echo_peer.url}", models: [shared]}}
  strix: {{proxy: "{echo_peer.url}", models: [shared]}}
""")
    assert set(await listed(swapper)) == {"shared", "cuda/shared", "strix/shared"}
    answer = await body_json(await swapper.chat("strix/shared"))
    assert answer["peer"] is True


@pytest_twisted.ensureDeferred
async def test_model_list_includes_aliases_when_asked(llamaswap) -> None:
    """follows internal/server TestServer_HandleListModels_Aliases"""
    config = f"models:\n  real:\n    {own_port_model('real')}\n    aliases: [nick]\n"
    assert set(await listed(await llamaswap(config))) == {"real"}
    assert set(await listed(await llamaswap("includeAliasesInList: true\n" + config))) == {
        "real", "nick"}


@pytest_twisted.ensureDeferred
async def test_model_path_under_upstream_takes_the_longest_model_id(llamaswap) -> None:
    """follows internal/server TestServer_FindModelInPath"""
    swapper = await llamaswap(f"""
models:
  author:
    {own_port_model("author")}
  author/model:
    {own_port_model("author/model")}
""")
    for path, model, rest in (("/upstream/author/model/echo/v1", "author/model", "/echo/v1"),
                              ("/upstream/author/echo/v1", "author", "/echo/v1")):
        response = await swapper.get(path)
        assert response.code == 200, path
        assert (await body_json(response))["path"] == rest
        assert swapper.state(model).value == "ready"
    assert (await swapper.get("/upstream/missing/v1")).code == 404


@pytest_twisted.ensureDeferred
async def test_upstream_proxies_redirects_the_bare_model_and_404s_the_unknown(
        llamaswap) -> None:
    """follows internal/server TestServer_HandleUpstream"""
    swapper = await llamaswap(one_model())
    response = await swapper.get("/upstream/m1/v1/models")
    assert response.code == 200
    assert (await body_json(response))["data"][0]["id"] == "m1"
    bare = await swapper.get("/upstream/m1", allow_redirects=False)
    assert bare.code == 301
    assert bare.headers.getRawHeaders("location")[0].endswith("/upstream/m1/")
    assert (await swapper.get("/upstream/nope/v1")).code == 404


@pytest_twisted.ensureDeferred
async def test_upstream_keeps_escaped_slashes_in_the_forwarded_path(llamaswap) -> None:
    """follows internal/server TestProxy_HandleUpstreamPreservesEscapedPath"""
    swapper = await llamaswap(f"""
models:
  m1:
    {own_port_model("m1")}
  author/model:
    {own_port_model("author/model")}
""")
    # Loaded first: with llama-swap's default upstream.ignorePaths a ``.json`` path never
    # starts a model (the Go test builds its config without that default).
    assert (await swapper.post("/upstream/m1/echo/warm", b"")).code == 200
    for target in ("/upstream/m1/echo/userdata/workflows%2Fexample.json",
                   "/upstream/author/model/echo/x%2Fy",
                   "/upstream/author%2Fmodel/echo/x%2Fy"):
        response = await swapper.post(target, b"")
        assert response.code == 200, target
        forwarded = (await body_json(response))["path"]
        assert forwarded == "/echo/" + target.rsplit("/echo/", 1)[1], target


@pytest_twisted.ensureDeferred
async def test_api_unload_all_and_one_model(llamaswap) -> None:
    """follows internal/server TestServer_HandleAPIUnloadAll and TestServer_HandleAPIUnloadModel"""
    swapper = await llamaswap(f"""
models:
  m1:
    {own_port_model("m1")}
  m2:
    {own_port_model("m2")}
groups:
  both: {{swap: false, members: [m1, m2]}}
""")
    for model in ("m1", "m2"):
        assert (await swapper.chat(model)).code == 200
    assert (await swapper.post("/api/models/unload/m1", b"")).code == 200
    await wait_for(lambda: swapper.pid("m1") is None)
    assert swapper.state("m2").value == "ready"
    assert (await swapper.post("/api/models/unload/nope", b"")).code == 404
    assert (await swapper.chat("m1")).code == 200
    assert (await swapper.post("/api/models/unload", b"")).code == 200
    await wait_for(lambda: swapper.pid("m1") is None and swapper.pid("m2") is None)


@pytest_twisted.ensureDeferred
async def test_capture_lookup_found_missing_and_malformed(llamaswap) -> None:
    """follows internal/server TestServer_HandleAPICapture"""
    swapper = await llamaswap(one_model("m1", "captureBuffer: 5\n"))
    assert (await swapper.chat("m1")).code == 200
    await wait_for(lambda: swapper.service.observability.in_flight == {})
    rows = (await body_json(await swapper.get("/api/metrics/activity")))
    rows = rows["data"] if isinstance(rows, dict) else rows
    capture_id = rows[0]["id"]
    found = await swapper.get(f"/api/captures/{capture_id}")
    assert found.code == 200
    assert "/v1/chat/completions" in await treq.text_content(found)
    assert (await swapper.get("/api/captures/999999")).code == 404
    assert (await swapper.get("/api/captures/abc")).code == 400


# --- auth_test.go ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_api_keys_gate_requests(llamaswap) -> None:
    """follows internal/server TestServer_AuthMiddleware"""
    open_swapper = await llamaswap(one_model())
    assert (await open_swapper.get("/v1/models")).code == 200
    swapper = await llamaswap("apiKeys: [secret]\n" + one_model())
    ok = await swapper.get("/v1/models", headers={"Authorization": "Bearer secret"})
    assert ok.code == 200
    wrong = await swapper.get("/v1/models", headers={"Authorization": "Bearer wrong"})
    assert wrong.code == 401
    assert wrong.headers.getRawHeaders("www-authenticate")
    assert (await swapper.get("/v1/models")).code == 401
    assert (await swapper.get("/v1/models", headers={"x-api-key": "secret"})).code == 200


# --- extras_test.go --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ui_and_favicon_are_served_or_absent_but_never_fail(llamaswap) -> None:
    """follows internal/server TestServer_HandleUIAndFavicon"""
    swapper = await llamaswap(one_model())
    for path in ("/ui/", "/favicon.ico"):
        assert (await swapper.get(path)).code in (200, 404), path


@pytest_twisted.ensureDeferred
async def test_version_prefixless_routes_reach_the_model(llamaswap) -> None:
    """follows internal/server TestServer_StripVersionPrefix"""
    swapper = await llamaswap(one_model())
    response = await swapper.post("/v/chat/completions", {"model": "m1", "test_echo": True})
    assert response.code == 200
    assert (await body_json(response))["path"] == "/chat/completions"


@pytest_twisted.ensureDeferred
async def test_model_list_status_follows_loaded_models_and_their_aliases(
        llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_HandleListModels_Status"""
    swapper = await llamaswap(f"""
includeAliasesInList: true
models:
  loaded-model:
    {own_port_model("loaded-model")}
    aliases: [loaded-alias]
  unloaded-model:
    {own_port_model("unloaded-model")}
peers:
  peer1: {{proxy: "{echo_peer.url}", models: [remote-model]}}
""")
    assert (await swapper.chat("loaded-model")).code == 200
    status = {model_id: record["status"]["value"]
              for model_id, record in (await listed(swapper)).items()}
    assert status == {"loaded-model": "loaded", "loaded-alias": "loaded",
                      "unloaded-model": "unloaded", "peer1/remote-model": "unloaded"}


# --- selector_test.go and profiles_test.go ---------------------------------------------------

SELECTORS = """
models:
  a:
    {a}
    aliases: [alias-a]
    filters:
      setParamsByID:
        variant: {{thinking: true}}
  b:
    {b}
  c:
    {c}
groups:
  balanced: {{swap: false, exclusive: false, members: [a, b, c]}}
peers:
  remote: {{proxy: "{peer}", models: [remote-model]}}
selectors:
  public:
    strategy: pin
    targets: [variant, remote/remote-model]
    name: Public Model
    description: Public selector
    metadata: {{purpose: testing}}
  warm:
    strategy: warm
    targets: [a, b, c]
  balanced:
    strategy: spillover
    targets: [a, b, c]
    settings: {{spillover: 1}}
  hidden-selector:
    strategy: pin
    targets: [a]
    unlisted: true
profiles:
  coding:
    pins: {{llm-code: public, disabled: ""}}
"""


async def selector_swapper(llamaswap: Any, echo_peer: Any) -> Any:
    return await llamaswap(SELECTORS.format(a=own_port_model("a"), b=own_port_model("b"),
                                            c=own_port_model("c"), peer=echo_peer.url))


@pytest_twisted.ensureDeferred
async def test_pin_selector_sends_its_first_target_with_that_targets_filters(
        llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_SelectorStrategyPin and
    TestServer_SelectorMiddleware_RewritesBeforeFiltersAndRecordsActivity"""
    swapper = await selector_swapper(llamaswap, echo_peer)
    response = await swapper.chat("public", test_echo=True)
    assert response.code == 200
    sent = json.loads((await body_json(response))["body"])
    assert sent["model"] == "variant" and sent["thinking"] is True
    assert swapper.starts == {"a": 1}
    await wait_for(lambda: swapper.service.observability.in_flight == {})
    rows = await body_json(await swapper.get("/api/metrics/activity"))
    rows = rows["data"] if isinstance(rows, dict) else rows
    assert [row["model"] for row in rows] == ["a"]


@pytest_twisted.ensureDeferred
async def test_warm_selector_prefers_a_running_target(llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_SelectorStrategyWarm"""
    swapper = await selector_swapper(llamaswap, echo_peer)
    assert (await body_json(await swapper.chat("warm")))["model"] == "a"  # none warm: first
    assert (await swapper.post("/api/models/unload/a", b"")).code == 200
    assert (await swapper.chat("c")).code == 200
    await wait_for(lambda: swapper.pid("a") is None)
    assert (await body_json(await swapper.chat("warm")))["model"] == "c"
    assert swapper.pid("a") is None


@pytest_twisted.ensureDeferred
async def test_spillover_selector_moves_on_when_a_target_is_busy(llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_SelectorStrategySpillover and
    TestServer_SelectorMiddleware_SpilloverReservations"""
    swapper = await selector_swapper(llamaswap, echo_peer)
    slow = swapper.chat("balanced", test_delay=2)
    await wait_for(lambda: swapper.pid("a") is not None, timeout=30)
    second = await body_json(await swapper.chat("balanced"))
    assert second["model"] == "b"
    assert (await body_json(await slow))["model"] == "a"
    third = await body_json(await swapper.chat("balanced"))  # a is free again
    assert third["model"] == "a"


@pytest_twisted.ensureDeferred
async def test_selectors_are_listed_with_their_settings_unless_unlisted(
        llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_Selector_ModelListings and
    TestServer_Selector_ModelListingPinUsesFirstTarget"""
    swapper = await selector_swapper(llamaswap, echo_peer)
    records = await listed(swapper)
    public = records["public"]
    assert public["name"] == "Public Model" and public["description"] == "Public selector"
    assert public["status"]["value"] == "unloaded"
    meta = public["meta"]["llamaswap"]
    assert meta["type"] == "selector" and meta["strategy"] == "pin"
    assert meta["targets"] == ["variant", "remote/remote-model"]
    assert meta["purpose"] == "testing"
    assert "spillover" not in meta
    balanced = records["balanced"]["meta"]["llamaswap"]
    assert balanced["strategy"] == "spillover" and balanced["targets"] == ["a", "b", "c"]
    assert balanced["spillover"] == 1
    assert "hidden-selector" not in records
    assert (await swapper.chat("b")).code == 200  # a pin looks at its first target only
    assert (await listed(swapper))["public"]["status"]["value"] == "unloaded"
    assert (await swapper.chat("a")).code == 200
    assert (await listed(swapper))["public"]["status"]["value"] == "loaded"


async def put_profile(swapper: Any, name: Any) -> int:
    response = await swapper.client.put(swapper.url + "/api/profiles/active",
                                        data=json.dumps({"name": name}).encode())
    await treq.content(response)
    return int(response.code)


@pytest_twisted.ensureDeferred
async def test_profile_api_lists_activates_refuses_unknown_and_clears(
        llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_ProfileAPI"""
    swapper = await selector_swapper(llamaswap, echo_peer)
    profiles = await body_json(await swapper.get("/api/profiles"))
    assert profiles["active"] is None
    assert [p["id"] for p in profiles["profiles"]] == ["coding"]
    assert profiles["profiles"][0]["pins"]["disabled"] == ""
    assert await put_profile(swapper, "coding") == 200
    assert (await body_json(await swapper.get("/api/profiles")))["active"] == "coding"
    assert await put_profile(swapper, "missing") == 404
    assert (await body_json(await swapper.get("/api/profiles")))["active"] == "coding"
    assert await put_profile(swapper, None) == 200
    assert (await body_json(await swapper.get("/api/profiles")))["active"] is None


@pytest_twisted.ensureDeferred
async def test_active_profile_pins_run_before_selectors_and_can_disable_a_name(
        llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_ProfileMiddleware_JSONAndFilters and
    TestServer_SelectorMiddleware_ProfileRunsFirst"""
    swapper = await selector_swapper(llamaswap, echo_peer)
    assert (await swapper.chat("llm-code")).code == 404  # a pin only while its profile is active
    assert await put_profile(swapper, "coding") == 200
    response = await swapper.chat("llm-code", test_echo=True)
    assert response.code == 200
    sent = json.loads((await body_json(response))["body"])
    assert sent["model"] == "variant" and sent["thinking"] is True
    assert swapper.starts == {"a": 1}
    assert (await swapper.chat("disabled")).code == 404


# --- filters_test.go -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_model_filters_strip_and_set_params_but_never_the_model(llamaswap) -> None:
    """follows internal/server TestServer_ApplyFilters"""
    swapper = await llamaswap(f"""
models:
  m1:
    {own_port_model("m1")}
    filters:
      stripParams: "temperature, model, top_k"
      setParams: {{top_p: 0.5, model: other}}
""")
    response = await swapper.chat("m1", test_echo=True, temperature=0.9, top_k=3, seed=1)
    sent = json.loads((await body_json(response))["body"])
    assert "temperature" not in sent and "top_k" not in sent
    assert sent["top_p"] == 0.5 and sent["seed"] == 1 and sent["model"] == "m1"


@pytest_twisted.ensureDeferred
async def test_peer_filters_apply_to_a_qualified_peer_model(llamaswap, echo_peer) -> None:
    """follows internal/server TestServer_ResolveFilters_QualifiedPeer"""
    swapper = await llamaswap(f"""
peers:
  remote:
    proxy: {echo_peer.url}
    models: [org/model]
    filters: {{stripParams: temperature}}
""")
    answer = await body_json(await swapper.chat("remote/org/model", temperature=0.2))
    sent = json.loads(answer["received"]["body"])
    assert "temperature" not in sent and sent["model"] == "org/model"


@pytest_twisted.ensureDeferred
async def test_multipart_model_is_renamed_and_the_file_kept(llamaswap) -> None:
    """follows internal/server TestServer_FormFilterMiddleware"""
    swapper = await llamaswap(f"models:\n  whisper:\n    {own_port_model('whisper')}\n"
                              "    useModelName: whisper-large-v3\n")
    response = await swapper.client.post(
        swapper.url + "/v1/audio/transcriptions", data={"model": "whisper"},
        files={"file": ("a.wav", "audio/wav", b"xx")})
    assert response.code == 200
    received = (await body_json(response))["received"]
    assert received["fields"]["model"] == "whisper-large-v3"
    assert received["files"]["file"]["filename"] == "a.wav"
    assert received["files"]["file"]["size"] == 2
