"""Finding the real llama.cpp ``llama-server`` built for the tests, and running it.

``tests/e2e/build_llama_server.sh`` builds it (``.ci/run`` calls it before pytest) into
``${XDG_CACHE_HOME:-~/.cache}/llamaswap-test/llama-server-<llama-cpp-python version>/``;
``LLAMA_SERVER`` may name another binary. Without ``LLAMA_SERVER``, a missing binary is
built on first use (so the README's test command works on its own; once per version), and a
failed build fails the tests that need it, loudly: it is part of the test setup, not an
optional extra.
"""

from __future__ import annotations

import importlib.metadata
import os
import shlex
import subprocess
from pathlib import Path

import pytest

BUILD_SCRIPT = Path(__file__).with_name("build_llama_server.sh")


def cached_binary() -> Path:
    """Where the build script puts llama-server for the installed llama-cpp-python."""
    version = importlib.metadata.version("llama-cpp-python")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "llamaswap-test" / f"llama-server-{version}" / "bin" / "llama-server"


def llama_server_binary() -> Path:
    """The llama-server to test with; fails the test with what to run when there is none."""
    named = os.environ.get("LLAMA_SERVER")
    binary = Path(named) if named else cached_binary()
    if not named and not binary.is_file():
        build = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True)
        if build.returncode != 0:
            pytest.fail(f"building llama-server failed:\n{build.stderr[-4000:]}", pytrace=False)
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"llama-server not found at {binary}: build it with "
                    f"`bash {BUILD_SCRIPT}` (.ci/run does) or set LLAMA_SERVER", pytrace=False)
    return binary


def llama_server_cmd(binary: Path, model: Path, alias: str, port: str, *, ctx: int = 256,
                     slots: int = 1, extra: str = "", warmup: bool = False) -> str:
    """A small, quick llama-server command line; ``port`` may be llamaswap's ``${PORT}``.

    Tests skip llama-server's warm-up run; ``warmup=True`` keeps it (as users run it: it
    touches every weight, so a load reads the whole model file).
    """
    return (f"{shlex.quote(str(binary))} -m {shlex.quote(str(model))} --alias {alias} "
            f"--host 127.0.0.1 --port {port} -c {ctx} -np {slots} -t 1 -b 512 -ub 512 "
            f"{'' if warmup else '--no-warmup '}--no-webui {extra}").strip()
