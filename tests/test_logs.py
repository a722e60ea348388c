"""Bounded logs, line splitting and the logLevel filter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.logger import LogLevel, globalLogPublisher

from llamaswap.logs import LineSplitter, LogRing, LogRules, attach, detach, get_logger


def test_ring_keeps_the_newest_lines_within_its_byte_budget() -> None:
    ring = LogRing(max_bytes=20)
    for i in range(10):
        ring.append(f"line-{i}")
    assert ring.tail(2) == ["line-8", "line-9"]
    assert len(ring.text()) <= 20


def test_splitter_joins_partial_lines_and_cuts_overlong_ones() -> None:
    lines: list[str] = []
    splitter = LineSplitter(lines.append, max_line=4)
    splitter.feed(b"ab")
    splitter.feed(b"c\r\nabcdefgh\nxy")
    assert lines == ["abc", "abcd", "efgh"]
    splitter.flush()
    assert lines[-1] == "xy"


@pytest.fixture
def events() -> Iterator[tuple[LogRules, list[dict]]]:
    """What reaches the process log while a service's rules are attached."""
    from llamaswap import logs

    seen: list[dict] = []
    rules = LogRules()
    # Only these rules: a service another test left running would also admit events.
    others, logs._dispatch.attached[:] = list(logs._dispatch.attached), []
    globalLogPublisher.addObserver(seen.append)
    attach(rules)
    yield rules, seen
    detach(rules)
    globalLogPublisher.removeObserver(seen.append)
    logs._dispatch.attached[:] = others


def test_log_level_filters_llamaswap_events(events: tuple[LogRules, list[dict]]) -> None:
    rules, seen = events
    log = get_logger("llamaswap.test")
    rules.set_level("warn")
    log.info("hidden")
    log.warn("shown")
    # Twisted's own events pass unfiltered (e.g. a channel another test left open timing out)
    ours = [e for e in seen if e.get("log_namespace", "").startswith("llamaswap")]
    assert [e["log_format"] for e in ours] == ["shown"]
    rules.set_level("debug")
    log.debug("now shown")
    assert seen[-1]["log_level"] is LogLevel.debug
