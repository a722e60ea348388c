"""llama-swap's ``internal/router`` scenarios (groups, on-demand start, unload, peers, the
loading stream), replayed over HTTP against a real llamaswap with real model processes.

llama-swap drives its routers with fake processes; here the processes are the test upstream
and the observations are what a client or the process table can see: which model answered,
which processes are alive, what the peer received.
"""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
import treq
from twisted.internet.protocol import Protocol

from llamaswap.policy import ModelState
from tests.compat.support import harness, own_port_model

body_json = harness.body_json
wait_for = harness.wait_for


def models(*names: str, extra: dict[str, str] | None = None) -> str:
    """A ``models:`` section of test upstreams; ``extra`` adds lines to a model's block."""
    lines = ["models:"]
    for name in names:
        lines += [f"  {name}:", f"    {own_port_model(name)}"]
        if extra and name in extra:
            lines += [f"    {line}" for line in extra[name].splitlines()]
    return "\n".join(lines) + "\n"


def overlapped(swapper: Any, first: str, second: str) -> list[bool]:
    """Record, on every state change, whether ``first`` and ``second`` are both up."""
    seen: list[bool] = []
    up = {ModelState.STARTING, ModelState.READY}

    def observe(process: Any, old: ModelState, new: ModelState) -> None:
        seen.append(swapper.state(first) in up and swapper.state(second) in up)

    for name in (first, second):
        swapper.service.processes[name].add_observer(observe)
    return seen


class _Held(Protocol):
    """Receives a streamed answer and can hang up on it."""

    def dataReceived(self, data: bytes) -> None:
        pass

    def hang_up(self) -> None:
        self.transport.stopProducing()  # type: ignore[attr-defined]


async def hold_busy(swapper: Any, model: str) -> _Held:
    """A streamed request that keeps ``model`` serving until the client hangs up."""
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}],
            "stream": True, "test_stall_after": 1}
    response = await swapper.post("/v1/chat/completions", body, unbuffered=True)
    held = _Held()
    response.deliverBody(held)
    return held


# --- group_test.go ---------------------------------------------------------------------------


def test_model_in_two_groups_is_refused_at_load(check_config) -> None:
    """follows internal/router TestGroup_NewGroup_DuplicateMembership"""
    checked = check_config("""
models:
  a: {cmd: "svr --port ${PORT}"}
groups:
  g1: {swap: true, members: [a]}
  g2: {swap: true, members: [a]}
""")
    assert not checked.ok and "a" in checked.errors


@pytest_twisted.ensureDeferred
async def test_swap_group_stops_the_previous_model(llamaswap) -> None:
    """follows internal/router TestGroup_ServeHTTP_SwapStopsPrevious"""
    swapper = await llamaswap(models("a", "b") +
                              "groups:\n  g: {swap: true, exclusive: true, members: [a, b]}\n")
    assert (await swapper.chat("a")).code == 200
    pid_a = swapper.pid("a")
    answer = await body_json(await swapper.chat("b"))
    assert answer["model"] == "b"
    assert swapper.pid("a") is None and not harness.pid_alive(pid_a)
    assert swapper.starts == {"a": 1, "b": 1}


@pytest_twisted.ensureDeferred
async def test_non_swap_group_keeps_siblings_running(llamaswap) -> None:
    """follows internal/router TestGroup_NonSwapGroup_NoStop"""
    swapper = await llamaswap(models("a", "b") +
                              "groups:\n  g: {swap: false, exclusive: false, members: [a, b]}\n")
    assert (await swapper.chat("a")).code == 200
    assert (await swapper.chat("b")).code == 200
    assert swapper.state("a") is ModelState.READY and swapper.state("b") is ModelState.READY


@pytest_twisted.ensureDeferred
async def test_exclusive_group_stops_other_groups(llamaswap) -> None:
    """follows internal/router TestGroup_CrossGroupExclusive"""
    swapper = await llamaswap(models("a", "b") + """
groups:
  g1: {swap: true, exclusive: true, members: [a]}
  g2: {swap: true, exclusive: true, members: [b]}
""")
    assert (await swapper.chat("a")).code == 200
    assert (await swapper.chat("b")).code == 200
    assert swapper.pid("a") is None and swapper.state("b") is ModelState.READY


@pytest_twisted.ensureDeferred
async def test_non_exclusive_groups_load_side_by_side(llamaswap) -> None:
    """follows internal/router TestGroup_CrossGroupNonExclusiveParallel and
    internal/router/scheduler TestFIFO_DisjointSwapsRunInParallel"""
    swapper = await llamaswap(models("a", "b") + """
groups:
  g1: {swap: true, exclusive: false, members: [a]}
  g2: {swap: true, exclusive: false, members: [b]}
""")
    both = overlapped(swapper, "a", "b")
    first, second = swapper.chat("a"), swapper.chat("b")
    assert [(await first).code, (await second).code] == [200, 200]
    assert True in both  # at some moment both were starting or ready
    assert swapper.state("a") is ModelState.READY and swapper.state("b") is ModelState.READY


@pytest_twisted.ensureDeferred
async def test_same_swap_group_never_runs_two_members_at_once(llamaswap) -> None:
    """follows internal/router TestGroup_SameGroupSwapSerialises and
    internal/router/scheduler TestFIFO_OverlappingEvictSetsDoNotRunInParallel"""
    swapper = await llamaswap(models("a", "b") +
                              "groups:\n  g: {swap: true, exclusive: false, members: [a, b]}\n")
    both = overlapped(swapper, "a", "b")
    first, second = swapper.chat("a"), swapper.chat("b")
    answers = [await body_json(await first), await body_json(await second)]
    assert [answer["model"] for answer in answers] == ["a", "b"]
    assert True not in both
    assert swapper.starts == {"a": 1, "b": 1}
    await wait_for(lambda: [swapper.pid("a"), swapper.pid("b")].count(None) == 1)


@pytest_twisted.ensureDeferred
async def test_persistent_group_survives_an_exclusive_swap(llamaswap) -> None:
    """follows internal/router TestGroup_PersistentNotEvicted"""
    swapper = await llamaswap(models("a", "b") + """
groups:
  persist: {swap: true, exclusive: false, persistent: true, members: [a]}
  other: {swap: true, exclusive: true, members: [b]}
""")
    assert (await swapper.chat("a")).code == 200
    pid_a = swapper.pid("a")
    assert (await swapper.chat("b")).code == 200
    assert swapper.pid("a") == pid_a and swapper.state("a") is ModelState.READY


@pytest_twisted.ensureDeferred
async def test_non_exclusive_group_does_not_unload_an_exclusive_one(llamaswap) -> None:
    """follows internal/router TestGroup_NonExclusiveDoesNotUnloadExclusive"""
    swapper = await llamaswap(models("a", "b") + """
groups:
  excl: {swap: true, exclusive: true, members: [a]}
  shared: {swap: true, exclusive: false, members: [b]}
""")
    assert (await swapper.chat("a")).code == 200
    assert (await swapper.chat("b")).code == 200
    assert swapper.state("a") is ModelState.READY and swapper.state("b") is ModelState.READY


# --- base_test.go ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_running_lists_ready_and_starting_models_only(llamaswap) -> None:
    """follows internal/router TestBaseRouter_RunningModels"""
    swapper = await llamaswap(f"""
models:
  ready:
    {own_port_model("ready")}
  starting:
    {own_port_model("starting", "--never-healthy")}
  stopped:
    {own_port_model("stopped")}
groups:
  all: {{swap: false, exclusive: false, members: [ready, starting, stopped]}}
""")
    assert (await swapper.chat("ready")).code == 200
    pending = swapper.chat("starting")
    pending.addErrback(lambda failure: None)
    await wait_for(lambda: swapper.state("starting") is ModelState.STARTING)
    running = (await body_json(await swapper.get("/running")))["running"]
    assert {entry["model"]: entry["state"] for entry in running} == {
        "ready": "ready", "starting": "starting"}
    pending.cancel()


@pytest_twisted.ensureDeferred
async def test_unload_one_model_leaves_the_others(llamaswap) -> None:
    """follows internal/router TestBaseRouter_UnloadSpecificModel and TestBaseRouter_UnloadAll"""
    swapper = await llamaswap(models("a", "c") +
                              "groups:\n  g: {swap: false, exclusive: false, members: [a, c]}\n")
    for name in ("a", "c"):
        assert (await swapper.chat(name)).code == 200
    assert (await swapper.post("/api/models/unload/a", b"")).code == 200
    await wait_for(lambda: swapper.pid("a") is None)
    assert swapper.state("c") is ModelState.READY
    assert (await swapper.get("/unload")).code == 200
    await wait_for(lambda: swapper.pid("c") is None)


@pytest_twisted.ensureDeferred
async def test_unload_waits_the_models_own_unload_timeout_before_killing(llamaswap) -> None:
    """follows internal/router TestBaseRouter_UnloadSpecificModelUsesConfiguredTimeout and
    TestBaseRouter_UnloadAllUsesConfiguredTimeouts"""
    swapper = await llamaswap(models("stubborn", "quick", extra={
        "stubborn": "unloadTimeout: 1", "quick": "unloadTimeout: 30"})[:-1]
        .replace("--quiet", "--quiet --ignore-sigterm", 1) + """
unloadTimeout: 30
groups:
  g: {swap: false, exclusive: false, members: [stubborn, quick]}
""")
    for name in ("stubborn", "quick"):
        assert (await swapper.chat(name)).code == 200
    stubborn = swapper.pid("stubborn")
    await swapper.post("/api/models/unload/stubborn", b"")
    # SIGTERM is ignored: only the kill after the model's own 1 s (not the global 30 s) ends it.
    await wait_for(lambda: not harness.pid_alive(stubborn), timeout=20)
    assert swapper.state("quick") is ModelState.READY


@pytest_twisted.ensureDeferred
async def test_first_request_starts_the_model_once(llamaswap) -> None:
    """follows internal/router TestBaseRouter_OnDemandStart and
    internal/router/scheduler TestFIFO_OnDemandStartThenServe"""
    swapper = await llamaswap(models("a"))
    assert swapper.pid("a") is None
    assert (await swapper.chat("a")).code == 200
    assert swapper.starts == {"a": 1}


@pytest_twisted.ensureDeferred
async def test_request_while_the_model_stops_restarts_it(llamaswap) -> None:
    """follows internal/router TestBaseRouter_RequestDuringStop"""
    config = models("a", extra={"a": "unloadTimeout: 2"}).replace(
        "--quiet", "--quiet --ignore-sigterm", 1)
    swapper = await llamaswap(config)
    assert (await swapper.chat("a")).code == 200
    unloading = swapper.post("/api/models/unload/a", b"")
    await wait_for(lambda: swapper.state("a") is ModelState.STOPPING)
    response = await swapper.chat("a")
    assert response.code == 200
    await unloading
    assert swapper.starts == {"a": 2}


@pytest_twisted.ensureDeferred
async def test_a_cancelled_request_does_not_hurt_the_next(llamaswap) -> None:
    """follows internal/router TestBaseRouter_ContextCancel"""
    swapper = await llamaswap(models("a"))
    first = swapper.chat("a", test_delay=5)
    await wait_for(lambda: swapper.service.observability.in_flight != {}, timeout=30)
    first.cancel()
    first.addErrback(lambda failure: None)
    response = await swapper.chat("a")
    assert response.code == 200


@pytest_twisted.ensureDeferred
async def test_unknown_model_is_404(llamaswap) -> None:
    """follows internal/router TestBaseRouter_ModelNotFound and
    internal/router/scheduler TestFIFO_ModelNotFound"""
    swapper = await llamaswap(models("a"))
    assert (await swapper.chat("missing")).code == 404


@pytest_twisted.ensureDeferred
async def test_over_the_concurrency_limit_is_a_429_error_not_a_loading_stream(
        llamaswap) -> None:
    """follows internal/router TestBaseRouter_ConcurrencyLimitRejectsBeforeLoadingStream and
    internal/router/scheduler TestFIFO_ConcurrencyLimit_CustomLimit"""
    swapper = await llamaswap(models("a", extra={
        "a": "concurrencyLimit: 2\nsendLoadingState: true"}))
    busy = [await hold_busy(swapper, "a") for _ in range(2)]
    response = await swapper.chat("a", stream=True)
    assert response.code == 429
    assert response.headers.getRawHeaders("content-type")[0].startswith("application/json")
    error = (await body_json(response))["error"]
    assert error["message"]
    for held in busy:
        held.hang_up()


@pytest_twisted.ensureDeferred
async def test_shutdown_stops_every_model_and_refuses_requests(llamaswap) -> None:
    """follows internal/router TestBaseRouter_Shutdown_StopsAllProcesses and
    internal/server TestServer_Shutdown_StopsRoutersAndIsIdempotent"""
    swapper = await llamaswap(models("a", "b") +
                              "groups:\n  g: {swap: false, exclusive: false, members: [a, b]}\n")
    pids = []
    for name in ("a", "b"):
        assert (await swapper.chat(name)).code == 200
        pids.append(swapper.pid(name))
    await swapper.service.stopService()
    assert not any(harness.pid_alive(pid) for pid in pids)
    await swapper.service.stopService()  # a second shutdown is harmless
    after = await swapper.chat("a")
    assert after.code >= 500
    await treq.content(after)


# --- peer_test.go ----------------------------------------------------------------------------


def peers(url: str, body: str) -> str:
    return "peers:\n" + body.replace("URL", url)


@pytest_twisted.ensureDeferred
async def test_a_peer_model_is_reachable_bare_and_qualified(llamaswap, echo_peer) -> None:
    """follows internal/router TestNewPeer_SinglePeer, TestNewPeer_MultiplePeers and
    TestPeer_ServeHTTP_Success"""
    swapper = await llamaswap(peers(echo_peer.url, """
  peer1: {proxy: "URL", models: [model-a, model-b]}
  peer2: {proxy: "URL", models: [model-c, model-d]}
"""))
    for name in ("model-a", "peer1/model-b", "model-c", "peer2/model-d"):
        response = await swapper.chat(name)
        assert response.code == 200, name
        assert (await body_json(response))["peer"] is True


@pytest_twisted.ensureDeferred
async def test_a_name_two_peers_serve_is_reachable_qualified(llamaswap, echo_peer) -> None:
    """follows internal/router TestNewPeer_DuplicateModel"""
    swapper = await llamaswap(peers(echo_peer.url, """
  peer1: {proxy: "URL", models: [duplicate-model]}
  peer2: {proxy: "URL", models: [duplicate-model]}
"""))
    for name in ("peer1/duplicate-model", "peer2/duplicate-model"):
        assert (await swapper.chat(name)).code == 200, name


@pytest_twisted.ensureDeferred
async def test_qualified_name_wins_over_a_colliding_bare_model(llamaswap, echo_peer) -> None:
    """follows internal/router TestNewPeer_FQNPrecedesCollidingBareModel"""
    swapper = await llamaswap(peers(echo_peer.url, """
  p1: {proxy: "URL", models: [model]}
  p2: {proxy: "URL", models: ["p1/model"]}
"""))
    sent = json.loads((await body_json(await swapper.chat("p1/model")))["received"]["body"])
    assert sent["model"] == "model"
    sent = json.loads((await body_json(await swapper.chat("p2/p1/model")))["received"]["body"])
    assert sent["model"] == "p1/model"


@pytest_twisted.ensureDeferred
async def test_qualified_model_reaches_the_peer_by_its_own_name(llamaswap, echo_peer) -> None:
    """follows internal/router TestPeer_ServeHTTP_QualifiedModelRewritten and
    TestPeer_ServeHTTP_ModelExtractedFromBody"""
    swapper = await llamaswap(peers(echo_peer.url, """
  remote: {proxy: "URL", models: [Q3.6-27B-MTP]}
"""))
    sent = json.loads((await body_json(await swapper.chat("remote/Q3.6-27B-MTP")))
                      ["received"]["body"])
    assert sent["model"] == "Q3.6-27B-MTP"


@pytest_twisted.ensureDeferred
async def test_model_no_peer_serves_is_404(llamaswap, echo_peer) -> None:
    """follows internal/router TestPeer_ServeHTTP_PeerModelNotFound and
    TestPeer_ServeHTTP_ModelNotFoundInContext"""
    swapper = await llamaswap(peers(echo_peer.url, '  p: {proxy: "URL", models: [known]}\n'))
    assert (await swapper.chat("p/unknown")).code == 404
    assert (await swapper.chat("unknown")).code == 404
    assert echo_peer.seen == []


@pytest_twisted.ensureDeferred
async def test_peer_api_key_is_sent_as_bearer_and_none_without_one(llamaswap,
                                                                  echo_peer) -> None:
    """follows internal/router TestPeer_ServeHTTP_ApiKeyInjection and TestPeer_ServeHTTP_NoApiKey"""
    swapper = await llamaswap(peers(echo_peer.url, """
  keyed: {proxy: "URL", apiKey: secret-api-key, models: [with-key]}
  open: {proxy: "URL", models: [without-key]}
"""))
    keyed = (await body_json(await swapper.chat("with-key")))["received"]["headers"]
    assert keyed["authorization"] == "Bearer secret-api-key"
    plain = (await body_json(await swapper.chat("without-key")))["received"]["headers"]
    assert "authorization" not in plain


@pytest_twisted.ensureDeferred
async def test_peer_sees_its_own_host(llamaswap, echo_peer) -> None:
    """follows internal/router TestPeer_ServeHTTP_HostHeaderSet"""
    swapper = await llamaswap(peers(echo_peer.url, '  p: {proxy: "URL", models: [m]}\n'))
    headers = (await body_json(await swapper.chat("m")))["received"]["headers"]
    assert headers["host"] == echo_peer.url.removeprefix("http://")


@pytest_twisted.ensureDeferred
async def test_streamed_peer_answer_is_not_buffered_by_proxies(llamaswap, echo_peer) -> None:
    """follows internal/router TestPeer_ServeHTTP_SSEHeaderModification"""
    swapper = await llamaswap(peers(echo_peer.url, '  p: {proxy: "URL", models: [m]}\n'))
    response = await swapper.chat("m", stream=True)
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/event-stream")
    assert response.headers.getRawHeaders("x-accel-buffering") == ["no"]
    assert (await treq.text_content(response)).endswith("data: [DONE]\n\n")


# --- matrix_test.go --------------------------------------------------------------------------


def matrix(sets: str, costs: str = "") -> str:
    return f"matrix:\n{costs}  sets:\n" + "".join(f"    {line}\n" for line in sets.splitlines())


@pytest_twisted.ensureDeferred
async def test_matrix_evicts_a_model_that_shares_no_set(llamaswap) -> None:
    """follows internal/router TestMatrix_SwapEvictsConflicting"""
    swapper = await llamaswap(models("a", "b") + matrix("s_a: a\ns_b: b"))
    assert (await swapper.chat("a")).code == 200
    assert (await swapper.chat("b")).code == 200
    await wait_for(lambda: swapper.pid("a") is None)
    assert swapper.state("b") is ModelState.READY


@pytest_twisted.ensureDeferred
async def test_matrix_keeps_a_model_sharing_a_set(llamaswap) -> None:
    """follows internal/router TestMatrix_CoexistInSet"""
    swapper = await llamaswap(models("a", "b") + matrix('s_ab: "a & b"'))
    assert (await swapper.chat("a")).code == 200
    pid_a = swapper.pid("a")
    assert (await swapper.chat("b")).code == 200
    assert swapper.pid("a") == pid_a and swapper.state("b") is ModelState.READY


@pytest_twisted.ensureDeferred
async def test_matrix_loads_models_of_one_set_side_by_side(llamaswap) -> None:
    """follows internal/router TestMatrix_CoexistingSetParallel"""
    swapper = await llamaswap(models("a", "b") + matrix('s_ab: "a & b"'))
    both = overlapped(swapper, "a", "b")
    first, second = swapper.chat("a"), swapper.chat("b")
    assert [(await first).code, (await second).code] == [200, 200]
    assert True in both


@pytest_twisted.ensureDeferred
async def test_matrix_request_for_an_incompatible_model_waits_then_evicts(llamaswap) -> None:
    """follows internal/router TestMatrix_IncompatibleQueues"""
    swapper = await llamaswap(models("a", "b") + matrix("s_a: a\ns_b: b"))
    both = overlapped(swapper, "a", "b")
    first, second = swapper.chat("a"), swapper.chat("b")
    answers = [await body_json(await first), await body_json(await second)]
    assert [answer["model"] for answer in answers] == ["a", "b"]
    assert True not in both


@pytest_twisted.ensureDeferred
async def test_matrix_ties_go_to_the_first_defined_set(llamaswap) -> None:
    """follows internal/router TestMatrixSolver_TieBreakDefinitionOrder"""
    swapper = await llamaswap(models("a", "b", "c") + matrix('first: "a & b"\nsecond: "a & c"'))
    assert (await swapper.chat("a")).code == 200
    assert (await swapper.chat("b")).code == 200  # in "first" with a: a stays
    assert swapper.state("a") is ModelState.READY


@pytest_twisted.ensureDeferred
async def test_matrix_keeps_the_model_that_is_dearer_to_evict(llamaswap) -> None:
    """follows internal/router TestMatrixSolver_EvictCostsPreferred"""
    swapper = await llamaswap(models("a", "b", "c") + matrix(
        'a_with_c: "a & c"\na_with_b: "a & b"\nb_and_c: "b & c"',
        costs="  evict_costs: {b: 10, c: 1}\n"))
    for name in ("b", "c"):
        assert (await swapper.chat(name)).code == 200
    assert (await swapper.chat("a")).code == 200
    await wait_for(lambda: swapper.pid("c") is None)
    assert swapper.state("b") is ModelState.READY and swapper.state("a") is ModelState.READY


# --- loading_test.go -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_loading_state_streams_progress_then_the_answer(llamaswap) -> None:
    """follows internal/router TestLoadingWriter_SSEHeadersAndInitialMessage,
    TestLoadingWriter_SendDataFormat, TestLoadingWriter_StartStopsOnCancel and
    TestLoadingWriter_FlushesPeriodicallyDuringStatusUpdates"""
    swapper = await llamaswap("sendLoadingState: true\n" + models("slow").replace(
        "--quiet", "--quiet --startup-delay 1.5", 1))
    response = await swapper.chat("slow", stream=True)
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/event-stream")
    assert response.headers.getRawHeaders("cache-control") == ["no-cache"]
    lines = (await treq.text_content(response)).splitlines()
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    reasoning = [e["choices"][0]["delta"].get("reasoning_content") for e in events]
    progress = [text for text in reasoning if text]
    assert len(progress) >= 2  # an opening message, updates while loading, then done
    assert "slow" in progress[0] and "Done!" in progress[-1]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert lines[-1] == "data: [DONE]" or lines[-2] == "data: [DONE]"


@pytest_twisted.ensureDeferred
async def test_loading_state_only_on_chat_completions(llamaswap) -> None:
    """follows internal/router TestIsLoadingPath"""
    swapper = await llamaswap("sendLoadingState: true\n" + models("slow").replace(
        "--quiet", "--quiet --startup-delay 1", 1))
    response = await swapper.post("/v1/completions",
                                  {"model": "slow", "prompt": "hi", "stream": True})
    assert response.code == 200
    assert "reasoning_content" not in await treq.text_content(response)


# --- scheduler/fifo_test.go ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_requests_waiting_for_one_model_share_its_start(llamaswap) -> None:
    """follows internal/router/scheduler TestFIFO_JoinInFlightSwap,
    TestFIFO_QueueDrainPromotesMultiple and TestFIFO_QueueCollation"""
    swapper = await llamaswap(models("a"))
    answers = [swapper.chat("a") for _ in range(4)]
    for pending in answers:
        assert (await pending).code == 200
    assert swapper.starts == {"a": 1}


@pytest_twisted.ensureDeferred
async def test_a_busy_model_is_not_swapped_out_until_it_drains(llamaswap) -> None:
    """follows internal/router/scheduler TestFIFO_NoSwapWhileServing"""
    swapper = await llamaswap(models("a", "b") + "routing:\n  scheduler:\n    use: fifo\n")
    first, second = await hold_busy(swapper, "a"), await hold_busy(swapper, "a")
    evicting = swapper.chat("b")
    await wait_for(lambda: swapper.service.router.queued() == 1)
    first.hang_up()
    await wait_for(lambda: swapper.service.router.in_flight("a") == 1)
    assert swapper.service.router.queued() == 1 and swapper.pid("b") is None
    second.hang_up()
    assert (await body_json(await evicting))["model"] == "b"
    assert swapper.pid("a") is None


@pytest_twisted.ensureDeferred
async def test_queued_models_start_in_priority_order(llamaswap) -> None:
    """follows internal/router/scheduler TestFIFO_PriorityQueueOrder"""
    swapper = await llamaswap(models("z", "A", "B", "C", "D") + """
routing:
  scheduler:
    use: fifo
    settings:
      fifo:
        priority: {A: 10, B: 5, C: 5, D: 1}
""")
    order: list[str] = []

    def observe(process: Any, old: ModelState, new: ModelState) -> None:
        if new is ModelState.STARTING:
            order.append(process.model.id)

    for process in swapper.service.processes.values():
        process.add_observer(observe)
    held = await hold_busy(swapper, "z")  # z serving: every other model has to queue
    pending: list[Any] = []
    for name in ("B", "D", "C", "A"):  # out of priority order; B before C among equals
        pending.append(swapper.chat(name))
        await wait_for(lambda: swapper.service.router.queued() == len(pending))
    held.hang_up()
    for response in pending:
        assert (await response).code == 200
    assert order == ["z", "A", "B", "C", "D"]


@pytest_twisted.ensureDeferred
async def test_a_cancelled_queued_request_starts_nothing(llamaswap) -> None:
    """follows internal/router/scheduler TestFIFO_OnCancel_QueuedRequest"""
    swapper = await llamaswap(models("a", "b") + "routing:\n  scheduler:\n    use: fifo\n")
    held = await hold_busy(swapper, "a")
    queued = swapper.chat("b")
    queued.addErrback(lambda failure: None)
    await wait_for(lambda: swapper.service.router.queued() == 1)
    queued.cancel()
    await wait_for(lambda: swapper.service.router.queued() == 0)
    held.hang_up()
    await wait_for(lambda: swapper.service.router.in_flight("a") == 0)
    assert (await swapper.chat("a")).code == 200
    assert "b" not in swapper.starts and swapper.state("a") is ModelState.READY


@pytest_twisted.ensureDeferred
async def test_default_concurrency_limit_is_ten(llamaswap) -> None:
    """follows internal/router/scheduler TestFIFO_ConcurrencyLimit_DefaultIsTen and
    TestFIFO_ConcurrencyLimit_RejectsOverLimit"""
    swapper = await llamaswap(models("a"))
    busy = [await hold_busy(swapper, "a") for _ in range(10)]
    over = await swapper.chat("a")
    assert over.code == 429
    await treq.content(over)
    busy.pop().hang_up()
    await wait_for(lambda: swapper.service.router.in_flight("a") == 9)
    assert (await swapper.chat("a")).code == 200
    for held in busy:
        held.hang_up()


@pytest_twisted.ensureDeferred
async def test_a_failed_start_fails_every_request_waiting_for_it(llamaswap) -> None:
    """follows internal/router/scheduler TestFIFO_SwapDoneError_FailsAllWaiters"""
    swapper = await llamaswap(models("a").replace("--quiet", "--quiet --exit-during-start 3", 1))
    waiting = [swapper.chat("a") for _ in range(3)]
    for pending in waiting:
        response = await pending
        assert response.code >= 500
        assert (await body_json(response))["error"]["message"]
    assert swapper.starts["a"] >= 1 and swapper.pid("a") is None
