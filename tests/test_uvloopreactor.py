"""``twistd --reactor=uvloop``: the plugin is registered and installs asyncio on uvloop."""

from __future__ import annotations

import subprocess
import sys

import pytest
from twisted.application.reactors import getReactorTypes

pytest.importorskip("uvloop")  # an optional extra: llamaswap[uvloop]


def test_uvloop_reactor_is_offered_to_twistd() -> None:
    offered = {r.shortName: r.moduleName for r in getReactorTypes()}
    assert offered.get("uvloop") == "llamaswap.uvloopreactor"


def test_installing_it_runs_the_asyncio_reactor_on_a_uvloop_loop() -> None:
    # A fresh interpreter: a reactor can be installed once per process.
    script = ("from llamaswap.uvloopreactor import install; install()\n"
              "from twisted.internet import reactor, task\n"
              "print(type(reactor).__name__, type(reactor._asyncioEventloop).__module__)\n"
              "task.deferLater(reactor, 0.01, lambda: None).addCallback(lambda _: reactor.stop())\n"
              "reactor.run()\n"
              "print('ran')\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["AsyncioSelectorReactor", "uvloop", "ran"]
