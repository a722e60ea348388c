"""Log streams, the proxy log collector, logToStdout, logTimeFormat and JSON-lines output."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from llamaswap.logs import (
    JSONLinesObserver,
    LogRules,
    LogStream,
    ProxyLogCollector,
    attach,
    detach,
    format_log_time,
    get_logger,
)


def test_log_stream_keeps_history_and_feeds_subscribers_until_they_leave() -> None:
    stream = LogStream(max_bytes=20)
    seen: list[str] = []
    unsubscribe = stream.subscribe(seen.append)
    for line in ("one", "two", "three", "four", "five"):
        stream.append(line)
    assert seen == ["one", "two", "three", "four", "five"]
    assert stream.text() == "two\nthree\nfour\nfive\n"  # 100 KiB in production, 20 here
    unsubscribe()
    unsubscribe()  # twice is harmless
    stream.append("six")
    assert seen[-1] == "five"


def event(fmt: str, level: LogLevel = LogLevel.info, namespace: str = "llamaswap.router",
          **fields: Any) -> dict[str, Any]:
    return {"log_format": fmt, "log_level": level, "log_namespace": namespace,
            "log_time": 1_700_000_000.25, **fields}


def test_proxy_collector_formats_llama_swap_style_lines_and_skips_model_output() -> None:
    stream = LogStream()
    collector = ProxyLogCollector(stream)
    collector(event("{model}: ready", model="m1"))
    collector(event("two\nlines", LogLevel.warn))
    collector(event("[{model}] output", namespace="llamaswap.model.m1", model="m1"))
    collector(event("it broke", LogLevel.error, log_failure=Failure(ValueError("bad value"))))
    assert stream.text().splitlines() == [
        "[INFO] m1: ready", "[WARN] two", "[WARN] lines", "[ERROR] it broke: bad value"]


def test_log_time_format_prefixes_lines() -> None:
    stream = LogStream()
    ProxyLogCollector(stream, "rfc3339")(event("hello"))
    assert re.fullmatch(r"2023-11-1\dT\d\d:\d\d:20[+-]\d\d:\d\d \[INFO\] hello\n", stream.text())
    assert format_log_time(1_700_000_000.25, "") == ""
    assert format_log_time(1_700_000_000.25, "nonsense") == ""
    assert re.fullmatch(r"\w{3} +\d+ \d\d:\d\d:20\.250 ", format_log_time(1_700_000_000.25,
                                                                            "stampmilli"))


OURS = ("test.obs", "llamaswap.model.test.obs")


@pytest.fixture
def captured() -> Any:
    """A service's rules, what reaches the process log (globalLogPublisher) and what its
    collectors see."""
    rules = LogRules()
    to_stdout: list[dict[str, Any]] = []
    collected: list[dict[str, Any]] = []

    def on_global(e: dict[str, Any]) -> None:
        if e.get("log_namespace", "").startswith(OURS):
            to_stdout.append(e)

    def on_collect(e: dict[str, Any]) -> None:
        if e.get("log_namespace", "").startswith(OURS):
            collected.append(e)

    globalLogPublisher.addObserver(on_global)
    rules.collectors.addObserver(on_collect)
    attach(rules)
    yield rules, to_stdout, collected
    detach(rules)
    globalLogPublisher.removeObserver(on_global)


@pytest.mark.parametrize("which, proxy, upstream", [
    ("both", True, True), ("proxy", True, False), ("upstream", False, True),
    ("none", False, False)])
def test_log_to_stdout_chooses_what_reaches_the_process_log(
        captured: Any, which: str, proxy: bool, upstream: bool) -> None:
    rules, to_stdout, collected = captured
    rules.set_to_stdout(which)
    get_logger("test.obs.proxy").info("proxy line")
    get_logger("llamaswap.model.test.obs").info("model line")
    namespaces = [e["log_namespace"] for e in to_stdout]
    assert ("test.obs.proxy" in namespaces) is proxy
    assert ("llamaswap.model.test.obs" in namespaces) is upstream
    # /logs and /api/events see everything, whatever reaches stdout
    assert [e["log_namespace"] for e in collected] == ["test.obs.proxy",
                                                       "llamaswap.model.test.obs"]


def test_log_level_applies_to_collectors_too(captured: Any) -> None:
    rules, _, collected = captured
    rules.set_level("warn")
    log = get_logger("test.obs.level")
    log.info("quiet")
    log.warn("loud")
    assert [e["log_format"] for e in collected] == ["loud"]


def test_json_lines_have_flat_structured_fields() -> None:
    out = io.StringIO()
    observer = JSONLinesObserver(out)
    observer(event('{client} "{method} {path}" {status}', namespace="llamaswap.access",
                   client="127.0.0.1", method="POST", path="/v1/chat/completions", status=200,
                   model="m1", request_id=7, not_json=object()))
    observer(event("boom", LogLevel.error, log_failure=Failure(RuntimeError("kaputt"))))
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == '127.0.0.1 "POST /v1/chat/completions" 200'
    assert first["level"] == "info" and first["namespace"] == "llamaswap.access"
    assert (first["model"], first["request_id"], first["status"]) == ("m1", 7, 200)
    assert first["not_json"].startswith("<object object")
    assert first["time"].startswith("2023-11-1")
    assert "log_format" not in first and "log_level" not in first
    assert second["level"] == "error" and second["error"] == "kaputt"
    assert "RuntimeError" in second["traceback"]
