"""llamaswap run like infrastructure: systemd notify + socket activation, TLS with a chain,
UNIX sockets, daemon mode with pidfile/logfile/umask, privilege dropping, library use.

twistd runs as a real subprocess wherever twistd itself is what is being tested.
"""

from __future__ import annotations

import datetime
import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from conftest import free_port, pid_alive, sleep, upstream_cmd, wait_for
from treq.client import HTTPClient
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.ssl import Certificate
from twisted.internet.threads import deferToThread
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from llamaswap import LlamaSwapService, load_config
from llamaswap.tap import Options, build_service

REPO = Path(__file__).resolve().parents[2]
TWISTD_CODE = "from twisted.scripts.twistd import run; run()"
TWISTD = [sys.executable, "-c", TWISTD_CODE]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

# Socket activation as systemd does it: the listening socket is fd 3, LISTEN_PID is the pid
# of the process that execs (twistd), LISTEN_FDS/LISTEN_FDNAMES describe the sockets.
ACTIVATE = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); "
    "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='http'); "
    f"os.execv(sys.executable, [sys.executable, '-c', {TWISTD_CODE!r}, *sys.argv[2:]])"
)


def write_config(directory: Path, *extra: str) -> Path:
    pid_file = directory / "model.pid"
    config = directory / "config.yaml"
    config.write_text(f"startPort: {free_port()}\nmodels:\n  m:\n"
                      f"    cmd: {upstream_cmd('m', '--pid-file', str(pid_file), *extra)}\n")
    return config


def chat_body(model: str = "m") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()


async def chat(client: Any, url: str) -> Any:
    response = await client.post(url + "/v1/chat/completions", chat_body(),
                                 headers={"Content-Type": "application/json"})
    assert response.code == 200, await treq.text_content(response)
    return json.loads(await treq.content(response))


def exited(pid: int) -> bool:
    """Gone, or a zombie nobody reaps (a daemon is not our child)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop(process: subprocess.Popen[bytes]) -> str:
    if process.poll() is None:
        process.kill()
    _, err = process.communicate()
    return err.decode(errors="replace")


# --- systemd ---------------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        yield sock, path


def drain(sock: socket.socket, into: list[dict[str, str]]) -> list[dict[str, str]]:
    while True:
        try:
            data = sock.recv(4096).decode()
        except BlockingIOError:
            return into
        into.append(dict(line.split("=", 1) for line in data.split("\n")))


@pytest_twisted.ensureDeferred
async def test_socket_activation_readiness_watchdog_and_stopping(
        tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    """A systemd-style start: twistd adopts an inherited listening socket, says READY=1
    (while that socket already serves), pings the watchdog, says STOPPING=1 on SIGTERM."""
    sock, notify_path = notify_socket
    config = write_config(tmp_path)
    inherited = socket.socket()
    inherited.bind(("127.0.0.1", 0))
    inherited.listen(50)
    port = inherited.getsockname()[1]
    env = {**ENV, "NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "200000"}
    server = subprocess.Popen(
        [sys.executable, "-c", ACTIVATE, str(inherited.fileno()), "-n", "--pidfile=",
         "llamaswap", "-c", str(config), "-l", "systemd:domain=INET:index=0"],
        cwd=tmp_path, env=env, pass_fds=(inherited.fileno(),),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    inherited.close()  # only twistd holds the socket now
    messages: list[dict[str, str]] = []
    try:
        await wait_for(lambda: drain(sock, messages), timeout=30)
        ready = messages[0]
        assert ready["READY"] == "1" and ready["MAINPID"] == str(server.pid)
        assert ready["STATUS"] == "serving 1 models"
        url = f"http://127.0.0.1:{port}"
        client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        health = await client.get(url + "/health")  # served on the inherited socket
        assert health.code == 200 and await treq.text_content(health) == "OK"
        assert (await chat(client, url))["object"] == "chat.completion"
        # The model does not inherit systemd's variables (it would confuse its own sd_notify).
        env_seen = json.loads(await treq.content(await client.get(url + "/upstream/m/env")))
        leaked = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID"} & set(env_seen)
        assert leaked == set()
        await wait_for(lambda: sum("WATCHDOG" in m for m in drain(sock, messages)) >= 3,
                       timeout=10)
        model_pid = int((tmp_path / "model.pid").read_text())

        server.send_signal(signal.SIGTERM)
        await wait_for(lambda: server.poll() is not None, timeout=20)
        drain(sock, messages)
        stopping = [i for i, m in enumerate(messages) if m.get("STOPPING") == "1"]
        assert len(stopping) == 1 and stopping[0] == len(messages) - 1  # nothing after it
        assert not pid_alive(model_pid)
    finally:
        stop(server)


def test_a_missing_systemd_socket_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [*TWISTD, "-n", "--pidfile=", "llamaswap", "-c", str(write_config(tmp_path)),
         "-l", "systemd:domain=INET:index=0"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "--listen systemd:domain=INET:index=0: no such socket was passed by systemd" in (
        result.stdout + result.stderr)


# --- TLS ------------------------------------------------------------------------------------


class PKI:
    """A root CA, an intermediate CA and a server certificate for 127.0.0.1, as PEM files."""

    def __init__(self, directory: Path, name: str = "llamaswap test") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.UTC)

        def issue(subject: str, key: Any, issuer: Any, issuer_key: Any, ca: bool) -> Any:
            builder = (x509.CertificateBuilder()
                       .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                   subject)]))
                       .issuer_name(issuer.subject if issuer else
                                    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                  subject)]))
                       .public_key(key.public_key())
                       .serial_number(x509.random_serial_number())
                       .not_valid_before(now - datetime.timedelta(minutes=5))
                       .not_valid_after(now + datetime.timedelta(days=1))
                       .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                                      critical=True))
            if ca:
                builder = builder.add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False),
                    critical=True)
            else:
                import ipaddress
                builder = builder.add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                     x509.DNSName("localhost")]), critical=False)
            return builder.sign(issuer_key or key, hashes.SHA256())

        def pem(cert: Any) -> bytes:
            return bytes(cert.public_bytes(serialization.Encoding.PEM))

        root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
        root = issue(f"{name} root CA", root_key, None, None, ca=True)
        mid = issue(f"{name} intermediate CA", mid_key, root, root_key, ca=True)
        leaf = issue("127.0.0.1", leaf_key, mid, mid_key, ca=False)
        directory.mkdir(parents=True, exist_ok=True)
        self.root = directory / "root.pem"
        self.leaf = directory / "leaf.pem"
        self.chain = directory / "chain.pem"
        self.fullchain = directory / "fullchain.pem"
        self.key = directory / "key.pem"
        self.root.write_bytes(pem(root))
        self.leaf.write_bytes(pem(leaf))
        self.chain.write_bytes(pem(mid))
        self.fullchain.write_bytes(pem(leaf) + pem(mid))
        self.key.write_bytes(leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        self.key.chmod(0o600)

    def client(self) -> HTTPClient:
        """An HTTPS client that trusts only this root CA (so it needs the intermediate)."""
        policy = BrowserLikePolicyForHTTPS(
            trustRoot=Certificate.loadPEM(self.root.read_bytes()))
        pool = HTTPConnectionPool(reactor, persistent=False)
        return HTTPClient(Agent(reactor, contextFactory=policy, pool=pool))


def served_chain(port: int) -> list[str]:
    """The common names of the certificates the server at ``port`` sends, in order
    (blocking: run it in a thread)."""
    from OpenSSL import SSL
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        connection = SSL.Connection(context, raw)
        connection.set_connect_state()
        deadline = time.monotonic() + 10
        while True:
            try:
                connection.do_handshake()
                break
            except SSL.WantReadError:
                if not select.select([raw], [], [], deadline - time.monotonic())[0]:
                    raise TimeoutError("no TLS handshake within 10 s") from None
        chain = connection.get_peer_cert_chain() or []
        return [str(cert.get_subject().CN) for cert in chain]


async def serve(args: list[str]) -> MultiService:
    options = Options()
    options.parseOptions(args)
    top = build_service(options)
    top.privilegedStartService()
    top.startService()
    return top


@pytest.mark.parametrize("form", ["ssl-endpoint", "tls-flags"])
@pytest_twisted.ensureDeferred
async def test_tls_with_an_intermediate_certificate_chain(tmp_path: Path, form: str) -> None:
    pki = PKI(tmp_path / "pki")
    config = write_config(tmp_path)
    port = free_port()
    if form == "ssl-endpoint":
        listen = ["-l", f"ssl:{port}:interface=127.0.0.1:privateKey={pki.key}"
                        f":certKey={pki.leaf}:extraCertChain={pki.chain}"]
    else:  # llama-swap's flags with a fullchain.pem, host:port becomes HTTPS
        listen = ["--tls-cert-file", str(pki.fullchain), "--tls-key-file", str(pki.key),
                  "-l", f"127.0.0.1:{port}"]
    top = await serve(["-c", str(config), *listen])
    try:
        url = f"https://127.0.0.1:{port}"
        assert (await chat(pki.client(), url))["choices"][0]["message"]["content"]
        # the server's certificate once, then the intermediate (a fullchain.pem's leaf is
        # not sent a second time)
        assert await deferToThread(served_chain, port) == [
            "127.0.0.1", "llamaswap test intermediate CA"]
        stranger = PKI(tmp_path / "other", name="unrelated")  # trusts a different CA only
        with pytest.raises(Exception) as refused:
            await stranger.client().get(url + "/health")
        assert "certificate verify failed" in str(refused.value.reasons[0].value)  # type: ignore[attr-defined]
        plain = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        with pytest.raises(Exception):  # noqa: B017 - plain HTTP gets no HTTP answer
            await plain.get(f"http://127.0.0.1:{port}/health")
    finally:
        await top.stopService()
    assert not pid_alive(int((tmp_path / "model.pid").read_text()))


@pytest.mark.parametrize(("args", "message"), [
    (["--tls-cert-file", "c.pem"], "--tls-cert-file and --tls-key-file must be given together"),
    (["--tls-key-file", "k.pem"], "--tls-cert-file and --tls-key-file must be given together"),
    (["--tls-cert-file", "missing.pem", "--tls-key-file", "missing.pem"],
     "--listen ssl:8443: "),
    (["-l", "ssl:8443:privateKey=missing.pem"], "--listen ssl:8443:privateKey=missing.pem: "),
    (["-l", "nope:a:b"], "--listen nope:a:b: ValueError: Unknown endpoint type"),
])
def test_bad_listen_and_tls_options_are_usage_errors(tmp_path: Path, args: list[str],
                                                     message: str) -> None:
    from twisted.python.usage import UsageError
    with pytest.raises(UsageError, match="^" + message.replace("-", r"\-")):
        Options().parseOptions(["-c", str(write_config(tmp_path)), *args])


def test_tls_flags_default_to_8443_and_keep_endpoint_strings(tmp_path: Path) -> None:
    pki = PKI(tmp_path / "pki")
    tls = ["--tls-cert-file", str(pki.leaf), "--tls-key-file", str(pki.key)]
    options = Options()
    options.parseOptions(["-c", str(write_config(tmp_path)), *tls])
    assert options["listen"] == [f"ssl:8443:privateKey={pki.key}:certKey={pki.leaf}"]
    options = Options()
    options.parseOptions(["-c", str(write_config(tmp_path)), *tls, "-l", ":9443",
                          "-l", "unix:/tmp/x.sock"])
    assert options["listen"] == [f"ssl:9443:privateKey={pki.key}:certKey={pki.leaf}",
                                 "unix:/tmp/x.sock"]


def test_a_fullchain_is_split_for_twisted_and_the_rest_removed_once_parsed(
        tmp_path: Path) -> None:
    pki = PKI(tmp_path / "pki")
    options = Options()
    options.parseOptions(["-c", str(write_config(tmp_path)), "--tls-cert-file",
                          str(pki.fullchain), "--tls-key-file", str(pki.key)])
    [endpoint] = options["listen"]
    prefix = f"ssl:8443:privateKey={pki.key}:certKey={pki.fullchain}:extraCertChain="
    assert endpoint.startswith(prefix)
    rest = Path(endpoint[len(prefix):])
    assert rest.read_bytes().strip() == pki.chain.read_bytes().strip()  # the intermediate
    assert stat.S_IMODE(rest.parent.stat().st_mode) == 0o700
    options.chain_files.remove()  # (what makeService does once the endpoints are parsed)
    assert not rest.parent.exists()
    # CRLF line ends (a chain saved on Windows): the rest is written so Twisted can read it
    crlf = tmp_path / "fullchain-crlf.pem"
    crlf.write_bytes(pki.fullchain.read_bytes().replace(b"\n", b"\r\n"))
    options = Options()
    options.parseOptions(["-c", str(write_config(tmp_path)), "--tls-cert-file", str(crlf),
                          "--tls-key-file", str(pki.key)])  # (parsed here: no usage error)
    rest = Path(options["listen"][0].rpartition(":extraCertChain=")[2])
    assert rest.read_bytes().strip() == pki.chain.read_bytes().strip()
    options.chain_files.remove()


# --- UNIX sockets -----------------------------------------------------------------------------


def unix_client(path: Path) -> HTTPClient:
    class Endpoints:
        def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
            return UNIXClientEndpoint(reactor, str(path))

    return HTTPClient(Agent.usingEndpointFactory(
        reactor, Endpoints(), pool=HTTPConnectionPool(reactor, persistent=False)))


@pytest_twisted.ensureDeferred
async def test_unix_socket_mode_lockfile_and_cleanup(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    path = tmp_path / "llamaswap.sock"
    listen = f"unix:{path}:mode=660:lockfile=1"
    top = await serve(["-c", str(config), "-l", listen])
    try:
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        assert (await chat(unix_client(path), "http://localhost"))["object"] == "chat.completion"
        # A second instance on the same socket is refused while the first holds the lock.
        with pytest.raises(CannotListenError, match="Cannot acquire lock"):
            await serve(["-c", str(config), "-l", listen])
    finally:
        await top.stopService()
    assert not path.exists() and not Path(f"{path}.lock").exists()  # removed on shutdown


@pytest_twisted.ensureDeferred
async def test_unix_socket_left_by_a_killed_instance_is_replaced(tmp_path: Path) -> None:
    """``unix:`` endpoints use a lock file by default (``PATH.lock``, a link to the pid): a
    socket file left by a SIGKILLed instance is replaced at the next start. With
    ``lockfile=0`` the leftover socket makes the start fail instead."""
    config = write_config(tmp_path)
    path = tmp_path / "llamaswap.sock"
    killed = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "llamaswap", "-c", str(config),
                               "-l", f"unix:{path}"], cwd=tmp_path, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await wait_for(path.exists, timeout=30)
        assert stat.S_IMODE(path.stat().st_mode) == 0o666  # Twisted's default mode
        assert os.readlink(f"{path}.lock") == str(killed.pid)
    finally:
        killed.kill()
        stop(killed)
    assert path.exists()  # SIGKILL: nothing cleaned up
    with pytest.raises(CannotListenError, match="Address already in use"):
        await serve(["-c", str(config), "-l", f"unix:{path}:lockfile=0"])
    top = await serve(["-c", str(config), "-l", f"unix:{path}"])
    try:
        response = await unix_client(path).get("http://localhost/health")
        assert await treq.text_content(response) == "OK"
    finally:
        await top.stopService()


# --- twistd daemon mode and privileges ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_daemon_mode_with_pidfile_logfile_and_umask(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    port = free_port()
    pidfile, logfile = tmp_path / "run" / "llamaswap.pid", tmp_path / "llamaswap.log"
    pidfile.parent.mkdir()
    launched = subprocess.run(
        [*TWISTD, f"--pidfile={pidfile}", f"--logfile={logfile}", "--umask=027",
         "llamaswap", "-c", str(config), "-l", f"tcp:{port}:interface=127.0.0.1"],
        cwd=tmp_path, env=ENV, capture_output=True, timeout=60)
    assert launched.returncode == 0, launched.stderr  # the launcher returns, the daemon runs
    await wait_for(pidfile.exists, timeout=20)
    daemon = int(pidfile.read_text())
    try:
        assert daemon != os.getpid() and not exited(daemon)
        with open(f"/proc/{daemon}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # Detached: a session of its own (twistd forks twice and calls setsid).
        assert int(fields[3]) != os.getsid(0)
        await wait_for(lambda: listening(port), timeout=20)
        client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        assert (await chat(client, f"http://127.0.0.1:{port}"))["object"] == "chat.completion"
        model_pid = int((tmp_path / "model.pid").read_text())
        # Files the daemon creates get 0666 & ~027 (twistd's own default umask is 077).
        assert stat.S_IMODE(pidfile.stat().st_mode) == 0o640
        await wait_for(lambda: '"POST /v1/chat/completions HTTP/1.1" 200' in logfile.read_text(),
                       timeout=10)
        # Model processes inherit the umask too (the model wrote its pid file itself). The
        # log file is opened before twistd applies --umask, so it is not covered.
        assert stat.S_IMODE((tmp_path / "model.pid").stat().st_mode) == 0o640
        os.kill(daemon, signal.SIGTERM)
        await wait_for(lambda: exited(daemon), timeout=20)
        assert not pid_alive(model_pid)
        assert not pidfile.exists()  # twistd removes its pidfile on a clean exit
        assert "stopped" in logfile.read_text()
    finally:
        if not exited(daemon):
            os.kill(daemon, signal.SIGKILL)


def test_daemon_mode_reports_a_port_in_use_to_the_launcher(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        launched = subprocess.run(
            [*TWISTD, f"--pidfile={tmp_path / 'l.pid'}", f"--logfile={tmp_path / 'l.log'}",
             "llamaswap", "-c", str(write_config(tmp_path)),
             "-l", f"tcp:{port}:interface=127.0.0.1"],
            cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60)
    assert launched.returncode == 1
    assert "CannotListenError" in launched.stdout + launched.stderr
    # The daemon tells the launcher first and removes its pidfile as it exits, a moment
    # later on a loaded machine: the file must go, not necessarily before the launcher ends.
    deadline = time.monotonic() + 30
    while (tmp_path / "l.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (tmp_path / "l.pid").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
@pytest_twisted.ensureDeferred
async def test_uid_gid_drop_after_binding(tmp_path: Path) -> None:
    """--uid/--gid: listeners are bound as root (here a port below 1024), then twistd runs
    as nobody. The config is read before the switch; model commands run as nobody, so they
    must be executable by it (this Python is not: it lives under /root, mode 0700)."""
    workdir = Path(tempfile.mkdtemp(prefix="llamaswap-uid-"))
    workdir.chmod(0o755)
    config = workdir / "config.yaml"
    config.write_text(f"startPort: {free_port()}\nmodels:\n  m:\n"
                      f"    cmd: {sys.executable} -c pass --port ${{PORT}}\n")
    config.chmod(0o644)
    port = next(p for p in range(1023, 900, -1) if not listening(p))
    server = subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", "--uid=nobody", "--gid=nogroup", "llamaswap",
         "-c", str(config), "-l", f"tcp:{port}:interface=127.0.0.1"],
        cwd=workdir, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await wait_for(lambda: listening(port), timeout=30)  # bound as root ...
        client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        response = await client.get(f"http://127.0.0.1:{port}/v1/models")  # ... then served
        assert [m["id"] for m in json.loads(await treq.content(response))["data"]] == ["m"]
        with open(f"/proc/{server.pid}/status") as f:
            ids = {line.split(":")[0]: line.split()[1:] for line in f if ":" in line}
        assert ids["Uid"] == ["65534"] * 4 and ids["Gid"] == ["65534"] * 4
        server.send_signal(signal.SIGTERM)
        await wait_for(lambda: server.poll() is not None, timeout=20)
        assert server.returncode in (0, -signal.SIGTERM)
    finally:
        stop(server)
        config.unlink()
        workdir.rmdir()


# --- library use ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_mounted_in_an_existing_site_and_multiservice(tmp_path: Path) -> None:
    """The README's embedding example: llamaswap's resource under /llm of an application's
    own Site, its service a child of the application's MultiService."""
    config = write_config(tmp_path)
    app = MultiService()
    root = Resource()
    root.putChild(b"", Data(b"my application", "text/plain"))
    swapper = LlamaSwapService(load_config(str(config)))
    swapper.setServiceParent(app)
    root.putChild(b"llm", swapper.resource)
    app.startService()
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}"
    client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
    try:
        assert await treq.text_content(await client.get(url + "/")) == "my application"
        assert (await chat(client, url + "/llm"))["object"] == "chat.completion"
        models = json.loads(await treq.content(await client.get(url + "/llm/v1/models")))
        assert [m["id"] for m in models["data"]] == ["m"]
        echoed = json.loads(await treq.content(await client.get(url + "/llm/upstream/m/echo")))
        assert echoed["path"] == "/echo"  # paths go upstream relative to the mount point
        model_pid = int((tmp_path / "model.pid").read_text())
        assert pid_alive(model_pid)
    finally:
        await port.stopListening()
        await app.stopService()  # stopping the application stops the models
    assert not pid_alive(model_pid)
    await sleep(0)


@pytest_twisted.ensureDeferred
async def test_mounted_the_queue_shows_paths_below_the_mount_and_request_ids(
        tmp_path: Path) -> None:
    """Mounted under /llm, a waiting request is listed as the activity history will list it:
    its path below the mount point, and a request id, though the Site is not llamaswap's."""
    config = write_config(tmp_path, "--startup-delay", "3")
    root = Resource()
    swapper = LlamaSwapService(load_config(str(config)))
    root.putChild(b"llm", swapper.resource)
    swapper.startService()
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}/llm"
    client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
    try:
        answer = ensureDeferred(chat(client, url))
        rows: list[Any] = []
        for _ in range(400):
            rows = json.loads(await treq.content(await client.get(url + "/api/queue")))[
                "requests"]
            if rows or answer.called:
                break
            await sleep(0.01)
        assert [(r["model"], r["req_path"]) for r in rows] == [("m", "/v1/chat/completions")]
        assert isinstance(rows[0]["id"], int)
        assert (await answer)["object"] == "chat.completion"
        activity = json.loads(await treq.content(await client.get(url + "/api/metrics/activity")))
        for _ in range(200):
            if activity["data"]:
                break
            await sleep(0.05)
            activity = json.loads(await treq.content(
                await client.get(url + "/api/metrics/activity")))
        assert [(r["id"], r["req_path"]) for r in activity["data"]] == [
            (rows[0]["id"], "/v1/chat/completions")]
    finally:
        await port.stopListening()
        await swapper.stopService()
