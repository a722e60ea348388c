"""The web UI in a real browser: Debian's headless Chromium driven by Playwright for Python,
against llamaswap running as users run it (``twistd -n llamaswap``) with a real upstream.

Set ``LLAMASWAP_UPDATE_SCREENSHOTS=1`` to refresh the screenshots in ``docs/``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import free_port, upstream_cmd

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="needs Debian's chromium (.ci/run installs it)")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"""
startPort: {free_port()}
logTimeFormat: rfc3339
models:
  demo-chat:
    name: Demo chat
    description: the test upstream
    cmd: {upstream_cmd("demo-chat")}
    ttl: 300
  demo-embed:
    name: Demo embeddings
    cmd: {upstream_cmd("demo-embed")}
groups:
  chat: {{swap: true, exclusive: false, members: [demo-chat]}}
  embed: {{swap: true, exclusive: false, members: [demo-embed]}}
""")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", "llamaswap", "-c", str(config), "-l",
         f"tcp:{port}:interface=127.0.0.1"], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=30)


def shot(page: object, name: str, tmp_path: Path) -> None:
    folder = REPO / "docs" if os.environ.get("LLAMASWAP_UPDATE_SCREENSHOTS") else tmp_path
    page.screenshot(path=str(folder / f"ui-{name}.png"))  # type: ignore[attr-defined]


def test_models_logs_activity_and_playground_in_a_real_browser(server: str,
                                                               tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(server + "/ui/#/models")
            chat_state = page.locator('#models tr[data-model="demo-chat"] .state')
            expect(chat_state).to_have_text("stopped")
            expect(page.locator("#conn")).to_have_text("live")

            # Playground: a streaming chat starts the model; the models page sees it live.
            page.click('a[data-page="playground"]')
            expect(page.locator("#chat-model option")).to_have_count(2)
            page.select_option("#chat-model", "demo-chat")
            page.fill("#chat-input", "hello from the browser")
            page.press("#chat-input", "Enter")
            answer = page.locator(".msg.assistant").last
            expect(answer).to_contain_text("hello from the browser", timeout=20_000)
            expect(page.locator("#chat-status")).to_contain_text("done in")
            shot(page, "playground", tmp_path)

            page.click('a[data-page="models"]')
            expect(chat_state).to_have_text("ready")
            shot(page, "models", tmp_path)

            # Logs: a new line shows up live.
            page.click('a[data-page="logs"]')
            view = page.locator("#log-view")
            expect(view).to_contain_text("POST /v1/chat/completions")
            marker = f"marker-{time.monotonic_ns()}"
            urllib.request.urlopen(f"{server}/health?{marker}", timeout=5).read()
            expect(view).to_contain_text(marker)
            page.fill("#log-filter", marker)
            expect(view).to_have_text(re.compile(rf"^[^\n]*{marker}[^\n]*$"))
            page.fill("#log-filter", "")
            shot(page, "logs", tmp_path)

            # Activity: the chat is recorded with its tokens.
            page.click('a[data-page="activity"]')
            first_row = page.locator("#activity tbody tr").first
            expect(first_row).to_contain_text("demo-chat")
            expect(first_row).to_contain_text("/v1/chat/completions")
            expect(page.locator("#stats .card")).to_contain_text("requests")
            shot(page, "activity", tmp_path)

            # Unload from the UI.
            page.click('a[data-page="models"]')
            page.click('#models tr[data-model="demo-chat"] button.unload')
            expect(chat_state).to_have_text("stopped", timeout=20_000)
            with urllib.request.urlopen(server + "/running", timeout=5) as response:
                assert b"demo-chat" not in response.read()
        finally:
            browser.close()
