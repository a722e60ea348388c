"""Import-time gates: a piece of the fast path is used only if it behaves as Twisted's own
code on the installed Twisted; one that does not says so once and stays off."""

from __future__ import annotations

from collections.abc import Callable

import twisted
from llamaswap.logs import get_logger

log = get_logger("llamaswap.web.fast")


def gate(piece: str) -> Callable[[Callable[[], bool]], Callable[[], bool]]:
    """Wrap a behaviour check: an exception counts as a failure, and a failure is logged."""

    def wrap(check: Callable[[], bool]) -> Callable[[], bool]:
        def run() -> bool:
            try:
                works = check()
                problem = "behaves differently"
            except Exception as e:
                works, problem = False, f"raised {type(e).__name__}: {e}"
            if not works:
                log.warn("fast path: {piece} is off: it {problem} on Twisted {version} "
                         "(the public path serves instead)", piece=piece, problem=problem,
                         version=twisted.__version__)
            return works

        return run

    return wrap
