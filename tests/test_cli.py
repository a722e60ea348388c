"""``llamaswap check-config`` and ``llamaswap --version``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import llamaswap
from llamaswap.cli import main
from llamaswap.slotcache.config import model_dir_name

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"llamaswap {llamaswap.__version__}\n"


def test_version_has_one_source() -> None:
    """pyproject.toml reads the version from llamaswap.__version__, it does not repeat it."""
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = { attr = "llamaswap.__version__" }' in pyproject
    assert llamaswap.__version__ not in pyproject


def test_check_config_prints_the_resolved_config(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, """
startPort: 7000
macros:
  server: my-server --host 127.0.0.1
  idle: 60
models:
  zeta:
    cmd: ${server} --port ${PORT} --name "two words"
    ttl: ${idle}
    metadata: {port: "${PORT}"}
  alpha:
    cmd: |
      # a comment line
      ${server} --port ${PORT} \\
        --model ${MODEL_ID}
    aliases: [a]
  remote:
    cmd: other-server
    proxy: http://127.0.0.1:9999
    tll: 5
groups:
  pair: {swap: false, members: [alpha, zeta]}
""")
    assert main(["check-config", config]) == 0
    captured = capsys.readouterr()
    resolved = yaml.safe_load(captured.out)
    # ports in sorted model-id order, macros expanded, quoting kept unambiguous
    assert resolved["models"]["alpha"]["port"] == 7000
    assert resolved["models"]["alpha"]["cmd"] == ("my-server --host 127.0.0.1 --port 7000 "
                                                  "--model alpha")
    assert resolved["models"]["zeta"]["cmd"] == ("my-server --host 127.0.0.1 --port 7001 "
                                                 "--name 'two words'")
    assert resolved["models"]["zeta"]["proxy"] == "http://localhost:7001"
    assert resolved["models"]["zeta"]["ttl"] == 60
    assert resolved["models"]["zeta"]["metadata"] == {"port": 7001}
    assert "port" not in resolved["models"]["remote"]
    assert resolved["groups"] == {
        "pair": {"swap": False, "exclusive": True, "persistent": False,
                 "members": ["alpha", "zeta"]},
        "(default)": {"swap": True, "exclusive": True, "persistent": False,
                      "members": ["remote"]},
    }
    err = captured.err.splitlines()
    assert err[0] == f"warning: {config}: models.remote.tll: unknown key, ignored " \
                     "(did you mean 'ttl'?)"
    assert err[-1] == f"{config}: OK (3 models, 2 groups, 1 warnings)"


def test_check_config_prints_the_slot_cache_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    config = write(tmp_path, f"""
slotCache: {{dir: {cache}, maxBytes: 2GiB, saveTimeout: 12, idleSave: 2.5}}
models:
  planner:
    cmd: llama-server --port ${{PORT}} --slot-save-path ${{SLOT_CACHE_DIR}}
    slotCache: true
  coder:
    cmd: llama-server --port ${{PORT}} --slot-save-path ${{SLOT_CACHE_DIR}}
    slotCache: {{enabled: true, maxBytes: 500MB, idleSave: false}}
  plain:
    cmd: llama-server --port ${{PORT}}
""")
    assert main(["check-config", config]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["slotCache"] == {"dir": str(cache), "maxBytes": 2 << 30, "saveTimeout": 12,
                                     "restoreTimeout": 30, "idleSave": 2.5}
    models = resolved["models"]
    assert models["coder"]["slotCache"] == {
        "enabled": True, "maxBytes": 500_000_000, "idleSave": 0,
        "dir": str(cache / model_dir_name("coder"))}
    assert models["planner"]["slotCache"]["maxBytes"] == 0
    assert models["planner"]["slotCache"]["idleSave"] == 2.5  # the top level's
    assert models["planner"]["slotCache"]["dir"] in models["planner"]["cmd"]
    assert "slotCache" not in models["plain"]


def test_check_config_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, "models:\n  m:\n    cmd: s --port ${PORT}\n")
    assert main(["check-config", "--format", "json", config]) == 0
    assert json.loads(capsys.readouterr().out)["models"]["m"]["port"] == 5800


def test_check_config_bad_config_same_lines_as_the_daemon(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llamaswap.tap import Options

    config = write(tmp_path, "startPort: 0\nmodels:\n  m:\n    proxy: http://h:1\n    tll: 5\n")
    assert main(["check-config", config]) == 1
    cli = capsys.readouterr()
    assert cli.out == ""
    with pytest.raises(SystemExit):
        Options().parseOptions(["-c", config])
    daemon = capsys.readouterr()
    assert cli.err == daemon.err
    assert f"{config}: models.m.cmd: cmd is required" in cli.err.splitlines()


def test_check_config_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "/nonexistent/config.yaml"]) == 1
    assert capsys.readouterr().err == ("/nonexistent/config.yaml: cannot read the config file: "
                                       "No such file or directory\n")


def test_every_example_config_checks(capsys: pytest.CaptureFixture[str]) -> None:
    for path in sorted((REPO / "config").glob("*.yaml")):
        assert main(["check-config", str(path)]) == 0, capsys.readouterr().err


def test_python_dash_m_and_usage_errors(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    config = write(tmp_path, "models:\n  m:\n    cmd: s --port ${PORT}\n")
    ok = subprocess.run([sys.executable, "-m", "llamaswap", "check-config", config],
                        capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0 and yaml.safe_load(ok.stdout)["models"]["m"]["port"] == 5800
    usage = subprocess.run([sys.executable, "-m", "llamaswap"], capture_output=True, text=True,
                           env=env, timeout=60)
    assert usage.returncode == 2 and "check-config" in usage.stderr
