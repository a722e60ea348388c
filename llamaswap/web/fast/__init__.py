"""The fast path: every optimisation that leans on Twisted's private state, fenced.

Nothing outside this package names a private Twisted attribute. Each piece lives in its own
module with a gate that runs at import: it feeds canned input through the piece and through
twisted.web's public path and compares what comes out (``docs/performance.md`` says what
each piece buys). A piece whose gate fails logs why, once, and is never used: the public
path serves instead, slower but unchanged.

One switch decides what is used, per ``FastPath``: the config's top-level ``fastPath``
(default ``true``) and the ``LLAMASWAP_FAST_PATH`` environment variable, which wins when set
(``0``/``off`` or ``1``/``on``; a comma-separated list of pieces turns on only those, for
measuring one piece alone).

- ``request``: ``Request.process`` with the ``Date`` header formatted once a second
  (``request.py``);
- ``writes``: socket writes sent once per reactor turn (``writes.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llamaswap.logs import get_logger

ENV_VAR = "LLAMASWAP_FAST_PATH"
PIECES = ("request", "writes")
_ON = {"1", "on", "true", "yes"}
_OFF = {"0", "off", "false", "no", ""}

log = get_logger("llamaswap.web.fast")


def parse_switch(value: str) -> frozenset[str]:
    """The pieces an ``LLAMASWAP_FAST_PATH`` value turns on; ``ValueError`` if it names
    something else."""
    text = value.strip().lower()
    if text in _ON:
        return frozenset(PIECES)
    if text in _OFF:
        return frozenset()
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = names - set(PIECES)
    if unknown:
        raise ValueError(f"{ENV_VAR}={value!r}: expected 0, 1, or a comma-separated list of "
                         f"{', '.join(PIECES)} (unknown: {', '.join(sorted(unknown))})")
    return frozenset(names)


def chosen(config_on: bool, environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The pieces asked for: the environment variable when set (it wins), else the config's
    ``fastPath``. A bad variable is logged and ignored."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_VAR)
    if value is not None:
        try:
            return parse_switch(value)
        except ValueError as e:
            log.warn("{problem}: using fastPath from the config", problem=str(e))
    return frozenset(PIECES) if config_on else frozenset()


def working() -> frozenset[str]:
    """The pieces whose import-time gate passed on the installed Twisted."""
    from llamaswap.web.fast import request, writes
    gates = {"request": request.WORKS, "writes": writes.WORKS}
    return frozenset(name for name, works in gates.items() if works)


@dataclass(frozen=True)
class FastPath:
    """The pieces in use for one server: asked for, and working."""

    pieces: frozenset[str]

    @classmethod
    def configure(cls, config_on: bool = True,
                  environ: Mapping[str, str] | None = None) -> FastPath:
        return cls(chosen(config_on, environ) & working())

    @classmethod
    def off(cls) -> FastPath:
        return cls(frozenset())

    def request_class(self, base: Any) -> Any:
        """``base`` (a request factory), with the quicker ``process`` if on and ``base`` is
        a ``twisted.web.server.Request`` subclass."""
        from twisted.web.server import Request
        if "request" not in self.pieces or not (isinstance(base, type)
                                                 and issubclass(base, Request)):
            return base
        from llamaswap.web.fast.request import with_fast_process
        return with_fast_process(base)

    def write_through(self, transport: Any) -> bool:
        """Batch ``transport``'s writes per reactor turn if on and it is a plain socket."""
        if "writes" not in self.pieces:
            return False
        from llamaswap.web.fast.writes import write_through
        return write_through(transport)
