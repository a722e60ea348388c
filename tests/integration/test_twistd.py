"""llamaswap as users run it: ``twistd -n llamaswap`` in a subprocess, signals included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
import treq
from conftest import free_port, pid_alive, sleep, upstream_cmd, wait_for
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins

REPO = Path(__file__).resolve().parents[2]


# ``python -m twisted`` is the newer ``twist`` runner; this is ``twistd`` for this Python.
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def twistd(config: Path, *args: str, cwd: Path,
           extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(extra_env or {})}
    return subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", "llamaswap", "-c", str(config), *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_plugin_is_discovered() -> None:
    assert "llamaswap" in {p.tapname for p in getPlugins(IServiceMaker)}


def test_installed_twistd_lists_llamaswap(tmp_path: Path) -> None:
    # No PYTHONPATH: this is what `pip install` (editable or not) must provide.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([*TWISTD, "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert "llamaswap" in out.stdout


def test_bad_config_exits_non_zero_with_one_line_per_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("models:\n  m:\n    cmd: server\n    proxy: http://x:1\n    ttl: -5\n"
                      "groups:\n  g:\n    members: [ghost]\n")
    result = twistd(config, "-l", f"tcp:{free_port()}:interface=127.0.0.1", cwd=tmp_path)
    _, err = result.communicate(timeout=60)
    assert result.returncode == 1
    lines = err.decode().strip().splitlines()
    assert any("models.m.ttl" in line for line in lines)
    assert any("groups.g" in line and "ghost" in line for line in lines)
    assert all(line.startswith(str(config)) for line in lines)


def test_missing_config_option_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [*TWISTD, "-n", "--pidfile=", "llamaswap"], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=60)
    assert result.returncode != 0 and "--config or --config-dir is required" in (
        result.stdout + result.stderr)


@pytest.mark.parametrize("listen", ["tcp:{port}:interface=127.0.0.1", "127.0.0.1:{port}"])
@pytest_twisted.ensureDeferred
async def test_sigterm_drains_stops_models_and_exits_cleanly(tmp_path: Path, listen: str) -> None:
    port = free_port()
    pid_file = tmp_path / "model.pid"
    config = tmp_path / "config.yaml"
    config.write_text(f"startPort: {free_port()}\nmodels:\n  m:\n"
                      f"    cmd: {upstream_cmd('m', '--pid-file', str(pid_file))}\n")
    server = twistd(config, "-l", listen.format(port=port), cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_for(lambda: _listening(port), timeout=30)
        slow = treq.post(url + "/v1/chat/completions", json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "test_delay": 1}
        ).encode(), headers={"Content-Type": "application/json"}, persistent=False)
        await wait_for(pid_file.exists, timeout=20)
        model_pid = int(pid_file.read_text())
        await sleep(0.5)
        server.send_signal(signal.SIGTERM)
        response = await slow  # the in-flight request is allowed to finish
        assert response.code == 200
        await treq.content(response)
        await wait_for(lambda: server.poll() is not None, timeout=20)
        assert server.returncode in (0, -signal.SIGTERM)
        assert not pid_alive(model_pid)
        assert not _listening(port)
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()


def _listening(port: int) -> bool:
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest_twisted.ensureDeferred
async def test_sighup_reloads_the_config_without_restarting(tmp_path: Path) -> None:
    """SIGHUP applies the new config in the same daemon, and tells systemd when it is done
    (RELOADING=1, then READY=1), so ``systemctl reload`` returns once it is in effect."""
    import socket
    port, start_port = free_port(), free_port()
    config = tmp_path / "config.yaml"

    def write(reply: str) -> None:
        config.write_text(f"startPort: {start_port}\nmodels:\n  m:\n"
                          f"    cmd: {upstream_cmd('m', '--reply', reply)}\n")

    async def reply() -> str:
        response = await treq.post(url + "/v1/chat/completions", json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "x"}]}).encode(),
            headers={"Content-Type": "application/json"}, persistent=False)
        return str(json.loads(await treq.content(response))["choices"][0]["message"]["content"])

    notifications: list[str] = []

    def notified(first: str) -> bool:
        """Reads what has arrived; true once a datagram starting with ``first`` has."""
        while True:
            try:
                notifications.append(systemd_socket.recv(4096).decode().split("\n")[0])
            except BlockingIOError:
                return first in notifications

    write("before")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd_socket:
        systemd_socket.bind(str(tmp_path / "notify"))
        systemd_socket.setblocking(False)
        server = twistd(config, "-l", f"tcp:{port}:interface=127.0.0.1", "--state-file=",
                        cwd=tmp_path, extra_env={"NOTIFY_SOCKET": str(tmp_path / "notify")})
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_for(lambda: notified("READY=1"), timeout=30)
            assert await reply() == "before"
            write("after")
            notifications.clear()
            server.send_signal(signal.SIGHUP)
            await wait_for(lambda: notified("READY=1"), timeout=30)
            assert notifications == ["RELOADING=1", "READY=1"]
            assert await reply() == "after"  # in effect by READY=1
            assert server.poll() is None  # the same daemon
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.communicate(timeout=20)
            finally:
                if server.poll() is None:
                    server.kill()
