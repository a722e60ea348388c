"""CI smoke test: an installed llamaswap serves config/example.yaml.

``python .ci/serve-example.py VENV`` starts ``VENV/bin/twistd -n llamaswap`` on the example
config (its models run ``llamaswap-demo`` from the same virtual environment), asks one chat
model for a completion and an embedding model for a vector, then stops it with SIGTERM and
requires a clean exit. Standard library only: it runs with any Python.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(port: int, path: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


def main() -> int:
    venv = Path(sys.argv[1]).resolve()
    port = free_port()
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PYTHONPATH", None)  # the installed package, not the checkout
    with tempfile.TemporaryDirectory() as cwd:
        server = subprocess.Popen(
            [str(venv / "bin" / "twistd"), "-n", "--pidfile=", "llamaswap",
             "-c", str(REPO / "config" / "example.yaml"), "--state-file=",
             "-l", f"tcp:{port}:interface=127.0.0.1"], cwd=cwd, env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                        break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("llamaswap did not start") from None
                    time.sleep(0.2)
            chat = post(port, "/v1/chat/completions", {
                "model": "chat-small", "messages": [{"role": "user", "content": "hello"}]})
            assert chat["choices"], chat  # type: ignore[truthy-bool]
            vectors = post(port, "/v1/embeddings", {"model": "embed", "input": "hello"})
            assert vectors["data"], vectors  # type: ignore[truthy-bool]
        finally:
            server.send_signal(signal.SIGTERM)
            status = server.wait(60)
    if status not in (0, -signal.SIGTERM):  # twistd ends by re-raising the signal it got
        raise SystemExit(f"llamaswap exited with status {status}")
    print(f"served config/example.yaml from {venv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
