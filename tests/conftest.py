"""Shared test setup: helpers importable as plain modules, and no silently swallowed errors."""

import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.logger import globalLogPublisher

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def no_logged_failures() -> Iterator[None]:
    """Fail a test whose code logged a traceback (an unhandled error in a Deferred, or an
    unexpected exception caught by llamaswap): pytest-twisted, unlike trial, ignores them."""
    failures: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_failure") is not None:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    yield
    gc.collect()  # Deferreds that die with an unhandled error log it when collected
    globalLogPublisher.removeObserver(observe)
    if failures:
        details = "\n".join(
            f"{e.get('log_namespace')}: {e['log_failure'].getTraceback()}" for e in failures)
        pytest.fail(f"errors were logged during the test:\n{details}")
