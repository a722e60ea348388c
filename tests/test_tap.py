"""twistd options: listen addresses, required config, config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python.usage import UsageError

from llamaswap.listening import ListeningService
from llamaswap.tap import Options, build_service, endpoint_from_listen


@pytest.mark.parametrize(("given", "endpoint"), [
    (":8080", "tcp:8080"),
    ("127.0.0.1:9000", "tcp:9000:interface=127.0.0.1"),
    ("[::1]:8080", r"tcp6:8080:interface=\:\:1"),
    ("tcp:8080:interface=127.0.0.1", "tcp:8080:interface=127.0.0.1"),
    ("tcp:8080", "tcp:8080"),
    ("tcp6:8080", "tcp6:8080"),
    ("ssl:8443", "ssl:8443"),
    ("localhost:8080", "tcp:8080:interface=localhost"),
    ("unix:/run/llamaswap.sock:mode=660", "unix:/run/llamaswap.sock:mode=660"),
    ("ssl:8443:privateKey=k.pem:certKey=c.pem", "ssl:8443:privateKey=k.pem:certKey=c.pem"),
])
def test_listen_forms(given: str, endpoint: str) -> None:
    assert endpoint_from_listen(given) == endpoint


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_listen_is_repeatable_and_defaults_to_8080(tmp_path: Path) -> None:
    config = write(tmp_path, "models:\n  m:\n    cmd: server --port ${PORT}\n")
    options = Options()
    options.parseOptions(["-c", config])
    assert options["listen"] == ["tcp:8080"]
    options = Options()
    options.parseOptions(["-c", config, "-l", ":1", "--listen", "unix:/tmp/x.sock"])
    assert options["listen"] == ["tcp:1", "unix:/tmp/x.sock"]
    service = build_service(options)
    swapper = service.getServiceNamed("llamaswap")
    listeners = [s for s in swapper if isinstance(s, ListeningService)]
    assert len(listeners) == 2  # one listening service per address


def test_config_is_required() -> None:
    with pytest.raises(UsageError, match="--config or --config-dir is required"):
        Options().parseOptions([])


def test_bad_config_prints_each_problem_and_exits_1(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, "startPort: 0\nmodels:\n  m:\n    proxy: http://h:1\n    tll: 5\n")
    with pytest.raises(SystemExit) as exited:
        Options().parseOptions(["-c", config])
    assert exited.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    problems = [line for line in lines if not line.startswith("warning: ")]
    assert len(problems) >= 2
    assert all(line.startswith(config + ": ") for line in problems)
    assert any("models.m.tll" in line and "ttl" in line for line in lines)  # the hint
    assert any("startPort" in line for line in lines)
    assert any("models.m.cmd" in line for line in lines)


def test_twistd_tunes_the_garbage_collector_once_running_and_embedding_does_not(
        tmp_path: Path) -> None:
    """In a fresh interpreter: the collector's settings are process-wide."""
    import subprocess
    import sys

    script = """
import gc, sys
from twisted.internet import reactor
from llamaswap.tap import Options, build_service, makeService
config = sys.argv[1]
options = Options()
options.parseOptions(["-c", config, "-l", "tcp:0:interface=127.0.0.1", "--state-file="])
before = gc.get_threshold()
build_service(options)
reactor.callWhenRunning(lambda: print("embedded", gc.get_threshold() == before))
makeService(options)
reactor.callWhenRunning(lambda: print("twistd", gc.get_threshold(), gc.get_freeze_count() > 0))
reactor.callWhenRunning(reactor.stop)
reactor.run()
"""
    config = write(tmp_path, "models:\n  m:\n    cmd: server --port ${PORT}\n")
    out = subprocess.run([sys.executable, "-c", script, config], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["embedded True", "twistd (7000, 10, 10) True"]


def test_twistd_gets_llamaswaps_log_observer_for_its_options(tmp_path: Path) -> None:
    """In a fresh interpreter (``makeService`` tunes the process): the application twistd
    builds around the service carries the observer (``twistdlog``) for twistd's options."""
    import subprocess
    import sys

    script = """
import sys
from twisted.application.service import Application
from twisted.logger import ILogObserver
from llamaswap.tap import Options, makeService
options = Options()
options.parseOptions(["-c", sys.argv[1], "-l", "tcp:0:interface=127.0.0.1", "--state-file="])
for twistd in ({"nodaemon": True, "logfile": None}, {"nodaemon": True, "syslog": True}):
    options.parent = twistd
    application = Application("llamaswap")
    makeService(options).setServiceParent(application)
    observer = application.getComponent(ILogObserver)
    out = getattr(observer, "_outFile", None)  # stdout, behind one write per reactor turn
    print(observer is not None and getattr(out, "_out", None) is sys.stdout)
"""
    config = write(tmp_path, "models:\n  m:\n    cmd: server --port ${PORT}\n")
    out = subprocess.run([sys.executable, "-c", script, config], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["True", "False"]
