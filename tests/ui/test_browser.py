"""The web UI in a real browser: Debian's headless Chromium driven by Playwright, against
llamaswap mounted under a path prefix of another Twisted site, with an API key, real
upstream processes and the real event stream. Every page also passes axe-core's check.

Every page reads llamaswap's real endpoints. Error states come from real refusals too: a
key scoped to ``inference`` gets 403 from the management API, and a second llamaswap runs
with performance sampling off. Playwright's request routing answers only what this machine
cannot produce: GPUs (no NVML here; ``test_hardware_page_draws_gpus_from_routed_data``), a
failed cancel, a refused event stream, and a 6,000-line log.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.ui.conftest import (
    INFERENCE_KEY,
    KEY,
    PREFIX,
    PageErrors,
    Server,
    check_accessibility,
    open_page,
    shot,
    use_key,
)


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=15_000)  # two loaded cores: generous waits
    return playwright_expect(locator)


def eventually_equal(actual: Any, wanted: Any, timeout: float = 30) -> None:
    """Polls until ``actual()`` equals ``wanted()`` (both read again each time: the page and
    llamaswap may each still be catching up), else fails showing both."""
    deadline = time.monotonic() + timeout
    while (got := actual()) != (want := wanted()):
        assert time.monotonic() < deadline, f"{got} != {want}"
        time.sleep(0.2)


def go(page: Any, server: Server, route: str) -> None:
    page.goto(server.ui + "#/" + route)
    expect(page.locator("#conn")).to_have_text("live", timeout=20_000)


def failing(status: int, message: str) -> Any:
    """A route handler answering llamaswap's JSON error envelope."""
    return lambda route: route.fulfill(status=status, json={
        "src": "llamaswap", "error": {"message": message, "type": "error", "code": "x"}})


def model_row(page: Any, model: str) -> Any:
    return page.locator(f'#models tr[data-model="{model}"]')


def test_without_a_key_the_ui_asks_for_one_and_keeps_it_for_the_tab_only(
        server: Server, browser: Any, page_errors: PageErrors, tmp_path: Path) -> None:
    page = open_page(browser, page_errors, with_key=False)
    try:
        page.goto(server.ui)  # the static files need no key; the API does
        expect(page.locator("#conn")).to_have_text("API key needed")
        expect(page.locator("#banner")).to_contain_text("needs an API key")
        page.click("#banner a")
        expect(page.locator("h1")).to_have_text("Settings")
        # /api/version without a key: llamaswap's real 401, shown with a Retry button.
        expect(page.locator("#version .error-box")).to_contain_text("401: ")
        page.fill("#api-key", KEY)
        page.click("#key-form button[type=submit]")
        expect(page.locator("#conn")).to_have_text("live")
        expect(page.locator("#api-key-status")).to_contain_text("accepted for this tab")
        page.click("#version .error-box button")  # now with the key: the real version
        version = server.call("/api/version")
        expect(page.locator("#version dd").first).to_have_text(version["version"])
        expect(page.locator("#version dd").nth(1)).to_have_text(version["commit"])
        assert page.evaluate("sessionStorage.getItem('llamaswap.apiKey')") == KEY
        assert page.evaluate("localStorage.getItem('llamaswap.apiKey')") is None
        page.reload()  # same tab: still known
        expect(page.locator("#conn")).to_have_text("live")

        # The theme follows the system until chosen; the choice sticks.
        assert page.evaluate("document.documentElement.dataset.theme") is None
        page.select_option("#theme", "dark")
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(21, 22, 26)"
        check_accessibility(page, "settings, dark")
        page.select_option("#theme", "system")
        assert page.evaluate("document.documentElement.dataset.theme") is None

        check_accessibility(page, "settings")
        shot(page, "settings", tmp_path)

        # Remembered: a new tab of the same browser profile starts with the key.
        page.check("#api-key-remember")
        page.click("#key-form button[type=submit]")
        expect(page.locator("#api-key-status")).to_contain_text("(remembered)")
        second = page.context.new_page()
        second.goto(server.ui + "#/models")
        expect(second.locator("#conn")).to_have_text("live")
        second.close()
    finally:
        page.context.close()

    fresh = open_page(browser, page_errors, with_key=False)  # another session: asked again
    try:
        fresh.goto(server.ui)
        expect(fresh.locator("#conn")).to_have_text("API key needed")
    finally:
        fresh.context.close()
    assert not page_errors, page_errors


def test_models_load_unload_and_the_model_page(server: Server, page: Any, tmp_path: Path) -> None:
    go(page, server, "models")
    chat = model_row(page, "demo-chat")
    expect(chat.locator(".state")).to_have_text("stopped")
    chat.locator("button.load").click()
    expect(chat.locator(".state")).to_have_text("ready", timeout=30_000)
    expect(chat.locator(".ttl")).to_contain_text("left")  # counting down from 300 s
    check_accessibility(page, "models")
    shot(page, "models", tmp_path)

    # Keyboard: the model's link opens its page.
    chat.locator("a").focus()
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("demo-chat")
    expect(page.locator("#model-summary")).to_contain_text("ready")
    expect(page.locator("#model-config")).to_contain_text("--token-delay 0.08")  # not a secret
    expect(page.locator("#model-config")).not_to_contain_text("null")
    expect(page.locator("#learnt-load")).to_have_text(re.compile(r"^\d+(\.\d\d)? m?s$"))
    expect(page.locator("#model-log-status")).to_have_text("streaming")  # the model is --quiet
    expect(page.locator("#view .log-panel .error-box")).to_have_count(0)
    check_accessibility(page, "model page")
    shot(page, "model", tmp_path)

    page.click("#view button.unload")
    expect(page.locator("#model-summary")).to_contain_text("stopped", timeout=30_000)
    running = server.call("/running")
    assert all(r["model"] != "demo-chat" for r in running["running"])


def test_playground_chat_streams_stops_and_the_other_tools_work(
        server: Server, page: Any, tmp_path: Path) -> None:
    go(page, server, "playground")
    expect(page.locator("#chat-model option")).to_have_count(4)
    page.select_option("#chat-model", "demo-chat")
    page.fill("#chat-system", "Answer briefly.")
    page.fill("#chat-max-tokens", "100")
    page.fill("#chat-input", "hello **from** the `browser`")
    page.press("#chat-input", "Enter")
    answer = page.locator("#chat-log .msg.assistant").last
    expect(answer).to_contain_text("hello from the browser", timeout=30_000)
    expect(page.locator("#chat-status")).to_contain_text("done in")
    # Markdown from the model is rendered as elements, never as HTML text.
    expect(answer.locator("strong")).to_have_text("from")
    expect(answer.locator("code")).to_have_text("browser")

    # Stop: a long answer (the chat model sends a token every 80 ms) is cut short.
    page.fill("#chat-input", " ".join(f"word{i}" for i in range(40)))
    page.click("#chat-send")
    expect(page.locator("#chat-log .msg.assistant").last).to_contain_text("word1", timeout=30_000)
    page.click("#chat-stop")
    expect(page.locator("#chat-status")).to_have_text("stopped")
    assert "word39" not in page.locator("#chat-log .msg.assistant").last.inner_text()
    check_accessibility(page, "playground chat")
    shot(page, "playground", tmp_path)

    # Tabs move with the arrow keys (ARIA tabs pattern).
    page.focus("#tab-chat")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#tab-completion")).to_be_focused()
    expect(page.locator("#panel-completion")).to_be_visible()

    page.select_option("#completion-model", "demo-chat")
    page.fill("#completion-prompt", "Once upon a time")
    page.click("#completion-run")
    expect(page.locator("#completion-output")).to_contain_text("took", timeout=30_000)

    page.click("#tab-embeddings")
    page.select_option("#embeddings-model", "demo-embed")
    page.fill("#embeddings-input", "a cat\na dog")
    page.click("#embeddings-run")
    expect(page.locator("#embeddings-dims")).to_contain_text("2 vectors of", timeout=30_000)
    expect(page.locator("#embeddings-output table.matrix tbody td").first).to_have_text("1.000")
    check_accessibility(page, "playground embeddings")

    page.click("#tab-rerank")
    page.select_option("#rerank-model", "demo-embed")
    page.fill("#rerank-query", "cats")
    page.fill("#rerank-documents", "about cats\nabout cars")
    page.click("#rerank-run")
    expect(page.locator("#rerank-results li")).to_have_count(2, timeout=30_000)

    page.click("#tab-images")
    page.select_option("#images-model", "demo-embed")
    page.fill("#images-prompt", "a llama")
    page.click("#images-run")
    expect(page.locator("#images-output img.generated")).to_have_count(1, timeout=30_000)

    page.click("#tab-speech")
    page.select_option("#speech-model", "demo-embed")
    page.fill("#speech-input", "hello")
    page.click("#speech-run")
    expect(page.locator("#speech-audio")).to_have_count(1, timeout=30_000)

    page.click("#tab-transcription")
    page.select_option("#transcription-model", "demo-embed")
    page.set_input_files("#transcription-file", files=[{
        "name": "hello.wav", "mimeType": "audio/wav", "buffer": b"RIFF0000WAVEfmt "}])
    page.click("#transcription-run")
    expect(page.locator("#transcription-text")).not_to_be_empty(timeout=30_000)

    # Side by side: one model after the other, each with its time to first token.
    page.click("#tab-compare")
    page.select_option("#compare-left", "demo-chat")
    page.select_option("#compare-right", "demo-embed")
    page.fill("#compare-prompt", "compare me")
    page.click("#compare-run")
    expect(page.locator("#compare-status-0")).to_contain_text("first token after", timeout=30_000)
    expect(page.locator("#compare-status-1")).to_contain_text("first token after", timeout=30_000)
    expect(page.locator("#compare-out-0")).to_contain_text("compare me")
    check_accessibility(page, "playground side by side")


def test_activity_filters_exports_and_captures(server: Server, page: Any, tmp_path: Path) -> None:
    server.call("/v1/chat/completions", {"model": "demo-chat", "messages": [
        {"role": "user", "content": "for the activity page"}]})
    server.call("/v1/embeddings", {"model": "demo-embed", "input": "for the activity page"})
    go(page, server, "activity")
    rows = page.locator("#activity tbody tr")
    expect(rows.first).not_to_have_text("no requests match")
    expect(page.locator("#activity tbody")).to_contain_text("demo-chat")
    expect(page.locator("#activity tbody")).to_contain_text("demo-embed")
    check_accessibility(page, "activity")

    # Filters: one model; then a path; then a status no row has.
    page.select_option("#activity-model", "demo-chat")
    expect(page.locator("#activity tbody")).not_to_contain_text("demo-embed")
    expect(page.locator("#activity tbody")).to_contain_text("/v1/chat/completions")
    # The generation speed histogram of that model is an SVG with bars.
    expect(page.locator("#gen-histogram svg rect.bar").first).to_be_attached()
    shot(page, "activity", tmp_path)
    page.select_option("#activity-model", "")
    page.fill("#activity-path", "embeddings")
    expect(page.locator("#activity tbody")).not_to_contain_text("demo-chat")
    expect(page.locator("#activity tbody")).to_contain_text("/v1/embeddings")
    page.select_option("#activity-status", "5xx")
    expect(rows).to_have_text(["no requests match"])
    page.click("#activity-filters button[type=reset]")
    expect(page.locator("#activity tbody")).to_contain_text("demo-chat")

    # Export: CSV and JSON of every matching row.
    with page.expect_download() as download:
        page.click("#export-csv")
    text = Path(download.value.path()).read_text()
    table = list(csv.DictReader(io.StringIO(text)))
    assert {"demo-chat", "demo-embed"} <= {row["model"] for row in table}
    assert table[0]["req_path"].startswith("/v1/")
    with page.expect_download() as download:
        page.click("#export-json")
    exported = json.loads(Path(download.value.path()).read_text())
    assert len(exported) == len(table)
    assert all("tokens" in row and "resp_status_code" in row for row in exported)

    # The capture viewer: a modal dialog with the request and the response.
    page.locator("#activity button.view-capture").first.click()
    dialog = page.locator("#capture")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("for the activity page")
    check_accessibility(page, "capture viewer")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.emulate_media(color_scheme="dark")  # the dark theme follows the system
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(21, 22, 26)"
    check_accessibility(page, "activity, dark")


def test_in_flight_requests_show_live_and_can_be_cancelled(
        server: Server, page: Any, tmp_path: Path) -> None:
    go(page, server, "activity")

    body = json.dumps({"model": "demo-chat", "stream": True, "test_stall_after": 1,
                       "messages": [{"role": "user", "content": "stall after one token"}]})
    request = urllib.request.Request(server.base + "/v1/chat/completions", data=body.encode(),
                                     headers={"Authorization": "Bearer " + KEY,
                                              "Content-Type": "application/json",
                                              "User-Agent": "ui-test-agent/1.0"})
    stalled: dict[str, Any] = {}

    def hold() -> None:
        response = urllib.request.urlopen(request, timeout=60)
        stalled["response"] = response
        response.read(1)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        row = page.locator("#inflight tbody tr[data-id]")
        expect(row).to_have_count(1, timeout=30_000)
        expect(row).to_contain_text("demo-chat")
        expect(row).to_contain_text("POST /v1/chat/completions")
        first = row.locator(".elapsed").inner_text()
        expect(row.locator(".elapsed")).not_to_have_text(first)  # ticking
        check_accessibility(page, "activity with a request in flight")

        row_id = row.get_attribute("data-id")
        button = row.locator("button.cancel")
        page.route("**/api/inflight/*/cancel", failing(404, "inflight request not found"))
        button.focus()
        page.keyboard.press("Enter")  # from the keyboard; focus survives the ticking rows
        expect(button).to_have_text("Cancel failed")
        page.wait_for_timeout(1200)
        expect(button).to_be_focused()
        assert button.get_attribute("title") == "404: inflight request not found"
        page.unroute("**/api/inflight/*/cancel")  # now llamaswap's own cancel
        with page.expect_response("**/api/inflight/*/cancel") as answered:
            button.click()
        assert answered.value.url == f"{server.base}/api/inflight/{row_id}/cancel"
        assert answered.value.status == 200
        expect(page.locator("#inflight tbody tr[data-id]")).to_have_count(0, timeout=30_000)
        thread.join(timeout=30)
        # the stalled client was told, and its stream ended
        assert b"request_cancelled" in stalled["response"].read()
    finally:
        thread.join(timeout=30)
        if "response" in stalled:
            stalled["response"].close()


def test_timeline_shows_phases_and_swaps_live(server: Server, page: Any) -> None:
    go(page, server, "timeline")
    server.call("/v1/embeddings", {"model": "demo-embed", "input": "first"})
    server.call("/v1/chat/completions", {"model": "demo-chat", "messages": [
        {"role": "user", "content": "swap"}]})  # evicts demo-embed (one group, exclusive)
    chart = page.locator("#timeline")
    expect(chart.locator('rect[data-model="demo-chat"][data-phase="starting"]')).to_have_count(1)
    expect(chart.locator('rect[data-model="demo-chat"][data-phase="ready"]').first).to_be_attached()
    expect(chart.locator('rect[data-model="demo-embed"][data-phase="stopping"]').first).to_be_attached()
    marker = chart.locator("path.swap-mark").last
    expect(marker).to_have_attribute("aria-label", re.compile("evicted demo-embed"))
    marker.focus()  # keyboard users get the details as hover does
    expect(page.locator("#timeline-details")).to_contain_text(
        "a request for demo-chat evicted demo-embed")
    page.select_option("#timeline-window", "60")
    expect(chart).to_have_attribute("aria-label", re.compile("last 1 minutes"))
    check_accessibility(page, "timeline")


def test_timeline_shows_a_crash_as_a_failed_segment_with_its_reason(
        server: Server, page: Any, tmp_path: Path) -> None:
    go(page, server, "timeline")
    page.select_option("#timeline-window", "60")
    server.call("/v1/embeddings", {"model": "demo-embed", "input": "before the crash"})
    server.call("/v1/chat/completions", {"model": "demo-chat", "messages": [
        {"role": "user", "content": "swap"}]})
    server.call("/upstream/demo-crash/")  # loads it; it exits by itself a second after it is ready
    chart = page.locator("#timeline")
    failed = chart.locator('rect[data-model="demo-crash"][data-phase="failed"]')
    expect(failed).to_have_count(1, timeout=30_000)
    # The reason is llamaswap's stopReason for a crash, in the accessible name and the tooltip.
    reason = re.compile(r"^demo-crash: failed from .+ — exited unexpectedly \(exit status 3\)$")
    expect(failed).to_have_attribute("aria-label", reason)
    expect(failed.locator("title")).to_have_text(reason)
    expect(failed).to_have_attribute("tabindex", "0")  # in the tab order
    expect(failed).to_have_attribute("role", "img")
    # the segment before the failure (ready, or serving while the load request was answered)
    before = chart.locator('rect[data-model="demo-crash"]:not([data-phase="failed"])').last
    expect(before).to_have_attribute("aria-label", re.compile(r"^demo-crash: (ready|serving) "))
    details = page.locator("#timeline-details")
    before.focus()
    expect(details).to_have_text(re.compile(r"^demo-crash: (ready|serving) from"))
    page.keyboard.press("Tab")  # the failed segment comes next in the tab order
    expect(failed).to_be_focused()
    expect(details).to_contain_text("exited unexpectedly")
    # The mouse gets the same details. The chart is redrawn every second and the segments
    # slide left, but a failed model stays failed "until now": its right end stays put.
    before.focus()
    expect(details).to_have_text(re.compile(r"^demo-crash: (ready|serving) from"))
    box = failed.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] - 1, box["y"] + box["height"] / 2)
    expect(details).to_contain_text("exited unexpectedly")
    check_accessibility(page, "timeline with a crash")
    shot(page, "timeline", tmp_path)


def test_queue_page_shows_real_waiting_requests(
        server: Server, browser: Any, page_errors: PageErrors, tmp_path: Path) -> None:
    page = open_page(browser, page_errors, key=INFERENCE_KEY)
    answers: list[int] = []

    def wait_for(model: str) -> threading.Thread:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "queued"}]})
        request = urllib.request.Request(server.base + "/v1/chat/completions", data=body.encode(),
                                         headers={"Authorization": "Bearer " + KEY,
                                                  "Content-Type": "application/json"})

        def send() -> None:
            try:
                urllib.request.urlopen(request, timeout=120).read()
                answers.append(200)
            except urllib.error.HTTPError as error:
                answers.append(error.code)

        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        return thread

    threads: list[threading.Thread] = []
    try:
        # An inference-only key: llamaswap refuses the management endpoint (a real 403).
        page.goto(server.ui + "#/queue")
        expect(page.locator("#view .error-box")).to_contain_text("403: ")
        use_key(page, KEY)
        expect(page.locator("#conn")).to_have_text("live", timeout=20_000)
        page.click("#view .error-box button")
        rows = page.locator("#queue tbody tr")
        expect(rows).to_have_text(["nothing waiting"])

        # demo-slow never finishes loading here: its requests wait for the load (position 0)
        # and those for demo-chat, in the same exclusive group, queue behind it.
        threads.append(wait_for("demo-slow"))
        deadline = time.monotonic() + 30
        while not server.call("/api/queue")["requests"]:
            assert time.monotonic() < deadline, "demo-slow's request never waited"
            time.sleep(0.1)
        threads += [wait_for("demo-chat"), wait_for("demo-chat")]
        expect(page.locator("#queue-depth")).to_have_text("3 requests waiting", timeout=30_000)
        expect(page.locator("#queue-count")).to_have_text("3")
        expect(rows).to_have_count(3, timeout=30_000)
        waiting = server.call("/api/queue")["requests"]
        assert [r["position"] for r in waiting] == [0, 1, 2]
        for row, request in zip(rows.all(), waiting, strict=True):
            cells = row.locator("td")
            expect(cells.nth(0)).to_have_text(str(request["position"]))
            # the access log's number; none when llamaswap is embedded (the host site logs)
            expect(cells.nth(1)).to_have_text("—" if request["id"] is None else str(request["id"]))
            expect(cells.nth(2)).to_have_text(request["model"])
            assert request["req_path"].endswith("/v1/chat/completions")
            expect(cells.nth(3)).to_have_text(request["req_path"])
            expect(cells.nth(5)).to_have_text(re.compile(r"^\d+(\.\d+)? m?s$"))  # an ETA
        waited = rows.first.locator("td").nth(4)
        before = waited.inner_text()
        expect(waited).not_to_have_text(before, timeout=15_000)  # asked again while they wait
        expect(page.locator("#view svg[aria-label='Queue depth over time'] path.series"))\
            .to_have_count(1)
        check_accessibility(page, "queue")
        shot(page, "queue", tmp_path)

        # Unloading abandons demo-slow's load: every waiting request is answered, none lost.
        server.call("/api/models/unload", {})
        expect(rows).to_have_text(["nothing waiting"], timeout=30_000)
        expect(page.locator("#queue-depth")).to_have_text("0 requests waiting")
    finally:
        if any(thread.is_alive() for thread in threads):
            server.call("/api/models/unload", {})  # a failed test leaves nothing waiting
        for thread in threads:
            thread.join(timeout=60)
        page.context.close()
    assert len(answers) == 3, answers  # every waiting client got its answer
    assert not page_errors, page_errors


def test_logs_follow_search_and_pause(server: Server, page: Any, tmp_path: Path) -> None:
    go(page, server, "logs")
    view = page.locator("#log-view")
    lines = view.locator(".log-line")
    server.call("/v1/embeddings", {"model": "demo-embed", "input": "x"})
    expect(view).to_contain_text("demo-embed: ready (pid")

    # Search keeps only matching lines, live ones included.
    page.fill("#log-filter", "swap: stopping")
    before = lines.count()
    server.call("/v1/embeddings", {"model": "demo-embed", "input": "x"})
    server.call("/v1/chat/completions", {"model": "demo-chat", "messages": [
        {"role": "user", "content": "x"}]})  # at least one swap between the two
    expect(lines).not_to_have_count(before)
    assert all("swap: stopping" in text for text in lines.all_inner_texts())
    page.fill("#log-filter", "")
    expect(view).to_contain_text("ready (pid")

    # Paused: new lines wait; resumed: they show.
    page.click("#log-pause")
    expect(page.locator("#log-pause")).to_have_attribute("aria-pressed", "true")
    shown = lines.count()
    server.call("/v1/embeddings", {"model": "demo-embed", "input": "x"})  # swaps chat out
    expect(page.locator("#log-status")).to_contain_text("paused")
    page.wait_for_timeout(500)
    assert lines.count() == shown
    page.click("#log-pause")
    expect(lines).not_to_have_count(shown)
    expect(lines.last).to_contain_text("demo-embed: ready")

    # One model's output (the test upstream is --quiet: the stream opens, no error).
    page.select_option("#log-source", "model:demo-chat")
    expect(page.locator("#log-status")).to_have_text("streaming")
    expect(page.locator("#view .error-box")).to_have_count(0)
    check_accessibility(page, "logs")
    page.select_option("#log-source", "")
    expect(view).to_contain_text("demo-embed: ready")
    shot(page, "logs", tmp_path)


def test_hardware_page(server: Server, browser: Any, page_errors: PageErrors,
                       tmp_path: Path) -> None:
    page = open_page(browser, page_errors, key=INFERENCE_KEY)
    try:
        # An inference-only key: both endpoints refuse it (real 403s); each box offers Retry.
        page.goto(server.ui + "#/performance")  # llama-swap's page name: the same page
        expect(page.locator("h1")).to_have_text("Hardware")
        expect(page.locator("#hardware .error-box")).to_contain_text("403: ")
        performance_box = page.locator("#view section").nth(1).locator(".error-box")
        expect(performance_box).to_contain_text("403: ")
        use_key(page, KEY)
        expect(page.locator("#conn")).to_have_text("live", timeout=20_000)
        page.click("#hardware .error-box button")
        performance_box.locator("button").click()

        # What this machine is, as llamaswap detected it.
        hardware = server.call("/api/hardware")
        cpu = hardware["cpu"]
        box = page.locator("#hardware")
        expect(box).to_contain_text(f"{cpu['vendor']} {cpu['model']}")
        expect(box).to_contain_text(
            f"{cpu['physical_core_count']} / {cpu['logical_thread_count']}")
        expect(box).to_contain_text(hardware["architecture"]["name"])
        if hardware["accelerators"]:  # (none on the machine these tests were written on)
            for accelerator in hardware["accelerators"]:
                expect(box).to_contain_text(accelerator["model"])
        else:
            expect(box.locator(".card").nth(1)).to_contain_text("none detected")

        # The real samples: CPU and memory charts; a GPU chart only for GPUs it samples.
        samples = server.call("/api/performance")
        total = samples["sys_stats"][-1]["mem_total_mb"]
        gpus = {g["id"] for g in samples["gpu_stats"]}
        charts = page.locator("#performance")
        expect(charts).to_contain_text(re.compile(rf"[\d,]+ of {total:,} MB used"))
        expect(charts).to_contain_text(re.compile(r"% over \d+ cores, load \d"))
        expect(charts.locator("svg path.series")).to_have_count(2 + 2 * len(gpus))
        expect(charts.locator(".card h3")).to_have_text(
            ["CPU", "Memory", *(re.compile(f"^GPU {g}: ") for g in sorted(gpus))])
        check_accessibility(page, "hardware")
        shot(page, "hardware", tmp_path)
    finally:
        page.context.close()
    assert not page_errors, page_errors


def test_hardware_page_says_when_sampling_is_off(server_without_sampling: Server,
                                                  page: Any) -> None:
    go(page, server_without_sampling, "hardware")
    expect(page.locator("#view section").nth(1).locator(".error-box")).to_contain_text(
        "503: performance sampling is off on this llamaswap")
    expect(page.locator("#hardware")).to_contain_text("cores / threads")  # still detected
    check_accessibility(page, "hardware without sampling")


def test_hardware_page_draws_gpus_from_routed_data(server: Server, page: Any) -> None:
    # Routed: this machine has no GPU and no NVML, so llamaswap cannot report one here.
    now = time.time()

    def stamp(seconds_ago: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - seconds_ago))

    real = server.call("/api/hardware")
    page.route("**/api/hardware", lambda route: route.fulfill(json={
        **real, "accelerators": [{
            "index": 0, "kind": "gpu", "vendor": "NVIDIA", "model": "RTX 4090",
            "architecture": "ada", "memory": {"kind": "dedicated", "capacity_bytes": 24 * 2**30},
            "driver": {"name": "nvidia", "version": "550"}, "power_limit_watts": 450}]}))
    samples = server.call("/api/performance")
    gpus = [{"timestamp": stamp(30 - i * 5), "id": 0, "name": "RTX 4090", "uuid": "u",
             "temp_c": 60, "vram_temp_c": 0, "gpu_util_pct": 50 + i, "mem_util_pct": 10,
             "mem_used_mb": 12000, "mem_total_mb": 24000, "fan_speed_pct": 30,
             "power_draw_w": 300} for i in range(6)]
    page.route("**/api/performance*", lambda route: route.fulfill(json={
        **samples, "gpu_stats": gpus if "after=" not in route.request.url else []}))
    go(page, server, "hardware")
    expect(page.locator("#hardware")).to_contain_text(
        "0: NVIDIA RTX 4090, 24.0 GiB dedicated, driver nvidia 550")
    charts = page.locator("#performance")
    expect(charts.locator(".card h3")).to_have_text(["CPU", "Memory", "GPU 0: RTX 4090"])
    expect(charts).to_contain_text("55 % busy, 12,000 of 24,000 MB, 60 °C, 300 W")
    expect(charts.locator("svg path.series")).to_have_count(4)  # CPU, memory, GPU and VRAM
    check_accessibility(page, "hardware with a GPU")


def test_the_ui_works_with_the_prefix_and_relative_urls_only(server: Server, page: Any) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server.base + "/ui/models")  # llama-swap's path: redirected to the page
    expect(page).to_have_url(server.ui + "#/models")
    expect(page.locator("#conn")).to_have_text("live", timeout=20_000)
    expect(model_row(page, "demo-chat")).to_have_count(1)
    ours = [url for url in requested if url.startswith(server.origin)]
    assert ours and all(url.startswith(server.base + "/") for url in ours), ours
    assert PREFIX == "/llm"


def test_the_event_stream_reconnects_and_every_page_says_when_it_is_down(
        server: Server, page: Any) -> None:
    attempts: list[str] = []

    def refuse(route: Any) -> None:
        attempts.append(route.request.url)
        route.abort()

    page.route("**/api/events", refuse)
    page.goto(server.ui + "#/models")
    expect(page.locator("#conn")).to_have_text("reconnecting")
    expect(page.locator("#banner")).to_contain_text("Live updates are interrupted")
    check_accessibility(page, "models while reconnecting")
    page.wait_for_timeout(1500)
    assert len(attempts) >= 2  # it keeps trying, with backoff
    page.unroute("**/api/events")
    expect(page.locator("#conn")).to_have_text("live", timeout=30_000)
    expect(page.locator("#banner")).to_be_hidden()
    expect(model_row(page, "demo-chat")).to_have_count(1)


def test_the_log_view_keeps_a_bounded_number_of_coloured_lines(
        server: Server, page: Any) -> None:
    # A routed proxy log of 6,000 lines, some coloured: the view keeps the newest 5,000.
    text = "".join(f"line {i}\n" if i % 2 else f"\x1b[31mline {i}\x1b[0m\n" for i in range(6000))
    page.route("**/logs/stream/proxy", lambda route: route.fulfill(
        body=text, headers={"content-type": "text/plain; charset=utf-8"}))
    go(page, server, "logs")
    page.select_option("#log-source", "proxy")
    lines = page.locator("#log-view .log-line")
    expect(lines).to_have_count(5000)
    expect(page.locator("#log-status")).to_contain_text("5000 lines kept, 1000 older dropped")
    expect(lines.first).to_have_text("line 1000")
    expect(lines.last).to_have_text("line 5999")
    assert lines.first.locator("span.ansi-fg-red").inner_text() == "line 1000"
    assert lines.last.locator("span").count() == 0
    # The stream ended: the view says so and offers to reopen it.
    expect(page.locator("#view .error-box")).to_contain_text("the log stream ended")


def test_the_log_view_draws_256_and_true_colours(server: Server, page: Any) -> None:
    # demo-crash's command prints 256-colour and true-colour text before it starts
    # (tests/ui/conftest.py COLOUR_LINE); the log view shows it in those colours.
    server.call("/upstream/demo-crash/")
    go(page, server, "logs")
    page.select_option("#log-source", "model:demo-crash")
    line = page.locator("#log-view .log-line", has_text="orange").last
    expect(line).to_have_text("orange green on blue not a colour")
    colour = "(span) => [getComputedStyle(span).color, getComputedStyle(span).backgroundColor]"
    orange = line.locator("span", has_text="orange")
    assert orange.evaluate(colour) == ["rgb(255, 135, 0)", "rgba(0, 0, 0, 0)"]
    assert line.locator("span", has_text="green").evaluate(colour)[0] == "rgb(80, 200, 120)"
    assert line.locator("span", has_text="on blue").evaluate(colour) == [
        "rgb(218, 218, 222)", "rgb(0, 0, 255)"]  # the log's text colour on palette blue
    expect(line.locator("span", has_text="not a colour")).to_have_count(0)  # 300 is no byte
    check_accessibility(page, "logs with 256 and true colours")


def test_tables_sort_by_their_headers_from_the_keyboard(server: Server, page: Any) -> None:
    for text in ("sort me", "and me"):
        server.call("/v1/embeddings", {"model": "demo-embed", "input": text})
    server.call("/v1/chat/completions", {"model": "demo-chat", "messages": [
        {"role": "user", "content": "sort"}]})
    go(page, server, "activity")
    table = page.locator("#activity")
    sorted_headers = table.locator("thead th[aria-sort]")
    expect(sorted_headers).to_have_count(1)  # only the sorted column says so
    expect(sorted_headers).to_have_attribute("aria-sort", "descending")
    expect(sorted_headers).to_have_text("ID ▼")

    def shows(sort: str, order: str) -> None:
        """The table's rows are llamaswap's for that order."""
        path = f"/api/metrics/activity?limit=25&sort={sort}&order={order}"
        eventually_equal(ids.all_inner_texts,
                         lambda: [str(row["id"]) for row in server.call(path)["data"]])

    ids = table.locator("tbody tr td:first-child")
    shows("id", "desc")
    model = table.locator("button.sort[data-sort=model]")
    expect(model).to_have_accessible_name("Model")
    model.focus()
    page.keyboard.press("Enter")
    expect(model.locator("xpath=..")).to_have_attribute("aria-sort", "ascending")
    expect(sorted_headers).to_have_count(1)
    shows("model", "asc")
    expect(model).to_be_focused()
    page.keyboard.press("Space")
    expect(model.locator("xpath=..")).to_have_attribute("aria-sort", "descending")
    shows("model", "desc")
    expect(table.locator("caption")).to_have_text("Finished requests, by Model, descending")
    duration = table.locator("button.sort[data-sort=duration]")
    duration.click()
    shows("duration", "asc")
    check_accessibility(page, "activity sorted")
    page.reload()  # kept for the tab
    expect(table.locator("th[aria-sort=ascending] button")).to_have_attribute(
        "data-sort", "duration")
    shows("duration", "asc")

    # Models: sorted here, by the values the event stream gave; kept for the tab as well.
    go(page, server, "models")
    rows = page.locator("#models tbody tr")
    names = sorted((m["id"] for m in server.call("/v1/models")["data"]), key=str.lower)
    expect(page.locator("#models thead th[aria-sort]")).to_have_count(0)  # by name until asked
    by_model = page.locator("#models button.sort[data-sort=id]")
    by_model.click()
    expect(rows.first).to_have_attribute("data-model", names[0])
    by_model.press("Enter")
    expect(by_model.locator("xpath=..")).to_have_attribute("aria-sort", "descending")
    expect(rows.first).to_have_attribute("data-model", names[-1])
    assert [rows.nth(i).get_attribute("data-model") for i in range(len(names))] == names[::-1]
    page.reload()
    expect(page.locator("#conn")).to_have_text("live", timeout=20_000)
    expect(rows.first).to_have_attribute("data-model", names[-1])
    check_accessibility(page, "models sorted")
