"""Bounded logs, line splitting and the logLevel filter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.logger import LogLevel, globalLogPublisher

from llamaswap.logs import LineSplitter, LogRing, get_logger, set_log_level


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
def events() -> Iterator[list[dict]]:
    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)
    set_log_level("info")


def test_log_level_filters_llamaswap_events(events: list[dict]) -> None:
    log = get_logger("llamaswap.test")
    set_log_level("warn")
    log.info("hidden")
    log.warn("shown")
    assert [e["log_format"] for e in events] == ["shown"]
    set_log_level("debug")
    log.debug("now shown")
    assert events[-1]["log_level"] is LogLevel.debug
