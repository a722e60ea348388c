"""The browser harness: llamaswap embedded under a path prefix in another Twisted site (as
README "Using llamaswap inside your Twisted application" shows) with an API key, Debian's
headless Chromium driven by Playwright, and axe-core's accessibility check.

Set ``LLAMASWAP_UPDATE_SCREENSHOTS=1`` to refresh the screenshots in ``docs/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import free_port, upstream_cmd

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
KEY = "ui-test-key"
INFERENCE_KEY = "ui-inference-key"
"""A key scoped to ``inference``: the management API answers it 403."""
PREFIX = "/llm"

if not os.path.exists(CHROMIUM):  # pragma: no cover - .ci/run installs it
    pytest.skip("needs Debian's chromium (.ci/run installs it)", allow_module_level=True)

_TAC = """
from twisted.application import service, strports
from twisted.web.resource import Resource
from twisted.web.server import Site
from llamaswap import LlamaSwapService, load_config

application = service.Application("ui-test")
root = Resource()
swapper = LlamaSwapService(load_config({config!r}))
swapper.setServiceParent(application)
root.putChild(b"llm", swapper.resource)
strports.service({listen!r}, Site(root)).setServiceParent(application)
"""


@dataclass
class Server:
    origin: str
    """``http://127.0.0.1:PORT``: the host site; llamaswap is below ``PREFIX``."""

    @property
    def base(self) -> str:
        return self.origin + PREFIX

    @property
    def ui(self) -> str:
        return self.base + "/ui/"

    def call(self, path: str, body: Any = None, timeout: float = 30) -> Any:
        """A JSON request to llamaswap with the key; the decoded answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, headers={
            "Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
        return json.loads(text) if text[:1] in (b"{", b"[") else text


COLOUR_LINE = ("\\033[38;5;208morange\\033[0m \\033[38;2;80;200;120mgreen\\033[0m "
               "\\033[48;5;21mon blue\\033[0m \\033[38;2;300;0;0mnot a colour\\033[0m")
"""What demo-crash prints before it starts (printf's escapes): 256-colour and true-colour
ANSI, and a malformed true colour, for the log view."""


def start_llamaswap(folder: Path, config: str) -> tuple[Server, subprocess.Popen[bytes]]:
    """twistd running the host site of ``_TAC`` with ``config``; returns once it answers."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (folder / "config.yaml").write_text(config)
    tac = folder / "app.tac"
    tac.write_text(_TAC.format(config=str(folder / "config.yaml"),
                               listen=f"tcp:{port}:interface=127.0.0.1"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with (folder / "twistd.log").open("wb") as log:
        process = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "-y", str(tac)], cwd=folder,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    origin = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(origin + PREFIX + "/health", timeout=1).read()
            return Server(origin), process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.1)


def stop_llamaswap(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=60)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("ui")
    colour = folder / "colour.sh"
    colour.write_text(f"printf '{COLOUR_LINE}\\n'\nexec \"$@\"\n")
    # One swap group: loading one model evicts the other, so the timeline has swaps to show.
    # demo-slow never finishes loading within a test (requests for it, and for the others
    # behind it, wait: the queue); demo-crash exits by itself a second after it is ready.
    config = textwrap.dedent(f"""
        startPort: {free_port()}
        apiKeys: [{KEY}, {{key: {INFERENCE_KEY}, scope: inference}}]
        captureBuffer: 5
        models:
          demo-chat:
            name: Demo chat
            description: the test upstream
            cmd: {upstream_cmd("demo-chat", "--token-delay", "0.08")}
            ttl: 300
          demo-embed:
            name: Demo embeddings
            cmd: {upstream_cmd("demo-embed")}
          demo-slow:
            name: Demo slow start
            cmd: {upstream_cmd("demo-slow", "--startup-delay", "600")}
          demo-crash:
            name: Demo crash
            cmd: sh {colour} {upstream_cmd("demo-crash", "--exit-after", "1")}
        groups:
          one-at-a-time: {{swap: true, exclusive: true,
                           members: [demo-chat, demo-embed, demo-slow]}}
        """)
    running, process = start_llamaswap(folder, config)
    yield running
    stop_llamaswap(process)


@pytest.fixture(scope="session")
def server_without_sampling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second llamaswap with ``performance: {disabled: true}`` (and no models)."""
    folder = tmp_path_factory.mktemp("ui-no-sampling")
    config = f"apiKeys: [{KEY}]\nperformance: {{disabled: true}}\nmodels: {{}}\n"
    running, process = start_llamaswap(folder, config)
    yield running
    stop_llamaswap(process)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class PageErrors(list[str]):
    """Uncaught errors of the page's scripts: every test ends with none."""


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


def open_page(browser: Any, errors: PageErrors, *, with_key: bool = True, key: str = KEY,
              color_scheme: str = "light") -> Any:
    """A fresh tab (empty storage); with_key puts ``key`` in sessionStorage first, as the
    Settings page does."""
    context = browser.new_context(viewport={"width": 1280, "height": 820},
                                  color_scheme=color_scheme, accept_downloads=True)
    if with_key:
        context.add_init_script(
            f"if (!sessionStorage.getItem('llamaswap.apiKey')) "
            f"sessionStorage.setItem('llamaswap.apiKey', {key!r})")
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page


@pytest.fixture
def page(browser: Any, page_errors: PageErrors) -> Iterator[Any]:
    tab = open_page(browser, page_errors)
    yield tab
    tab.context.close()
    assert not page_errors, page_errors


def use_key(page: Any, key: str) -> None:
    """Switch the tab to ``key`` as the Settings page does (the event stream restarts)."""
    page.evaluate("""(key) => {
        sessionStorage.setItem('llamaswap.apiKey', key);
        window.dispatchEvent(new Event('llamaswap:key-changed'));
    }""", key)


def check_accessibility(page: Any, what: str) -> None:
    """axe-core (WCAG 2.x A/AA and best practices) finds nothing on the page as it is."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    assert results.violations_count == 0, f"{what}:\n{results.generate_report()}"


def shot(page: Any, name: str, tmp_path: Path) -> None:
    folder = REPO / "docs" if os.environ.get("LLAMASWAP_UPDATE_SCREENSHOTS") else tmp_path
    page.screenshot(path=str(folder / f"ui-{name}.png"))
