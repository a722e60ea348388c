# -*- test-case-name: tests.test_tap -*-
"""twistd integration: ``twistd -n llamaswap -c config.yaml [-l ENDPOINT]...``.

Everything process-wide is decided here, for twistd's process only: signal handlers (SIGHUP
reloads the config, SIGUSR1 rotates a log file), the log observer and GC tuning.
``build_service`` and ``LlamaSwapService`` install none of it, so an application embedding
them keeps its process as it was.
"""

from __future__ import annotations

import atexit
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.logger import ILogObserver
from twisted.python import usage
from twisted.python.components import Componentized
from twisted.python.logfile import LogFile

from llamaswap.config import Config, ConfigError, load_config
from llamaswap.exposure import warn_if_exposed
from llamaswap.gctuning import tune_for_serving
from llamaswap.orphans import default_state_path
from llamaswap.service import DEFAULT_DRAIN_TIMEOUT, LlamaSwapService
from llamaswap.systemd import SystemdNotifyService
from llamaswap.twistdlog import destination_for, text_observer

DEFAULT_LISTEN = "tcp:8080"
DEFAULT_TLS_LISTEN = "ssl:8443"
"""With ``--tls-cert-file``/``--tls-key-file`` the default becomes llama-swap's ``:8443``."""
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^:\[\]]*):(?P<port>\d+)$")
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)

TLS = tuple[str, str, str | None]
"""``--tls-cert-file``, ``--tls-key-file``, and the file of the certificates after the first
(``ChainFiles``), if the certificate file holds more than one."""


class ChainFiles:
    """The intermediate certificates of a ``fullchain.pem``, in a file of their own.

    Twisted's ``ssl:`` endpoint reads the server's certificate from ``certKey`` (the first in
    the file) and sends every certificate of the ``extraCertChain`` file after it: given the
    full chain there, it would send the server's certificate twice. The endpoint takes only
    a file path, so the rest of the chain is written to a private temporary directory, read
    while the endpoints are parsed (``makeService``, before twistd drops privileges), then
    removed (``remove``; at exit at the latest).
    """

    def __init__(self) -> None:
        self._directory: str | None = None

    def rest_of(self, cert_file: str) -> str | None:
        """A file of the certificates after the first in ``cert_file``; ``None`` if it
        holds one (or cannot be read: the endpoint check reports that)."""
        try:
            certificates = _PEM_CERTIFICATE.findall(Path(cert_file).read_bytes())
        except OSError:
            return None
        if len(certificates) < 2:
            return None
        if self._directory is None:
            self._directory = tempfile.mkdtemp(prefix="llamaswap-tls-")
            atexit.register(self.remove)
        path = Path(self._directory) / "chain.pem"
        # (LF line ends: Twisted's reader of the chain file matches no CRLF-ended block)
        path.write_bytes(b"\n".join(certificates[1:]).replace(b"\r\n", b"\n") + b"\n")
        return str(path)

    def remove(self) -> None:
        directory, self._directory = self._directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def endpoint_from_listen(value: str, tls: TLS | None = None) -> str:
    """Accept llama-swap's ``:8080`` and ``host:port`` forms besides Twisted endpoint strings.

    With ``tls`` those forms become ``ssl:`` endpoints, as llama-swap serves HTTPS on
    ``-listen`` when given ``-tls-cert-file``/``-tls-key-file``. Endpoint strings are always
    taken as written.
    """
    match = _HOST_PORT.match(value)
    if not match or match.group("host") in _endpoint_types():
        return value  # "tcp:8080", "ssl:8443", "unix:..." are endpoint strings, not host:port
    host, port = match.group("host"), match.group("port")
    if tls is not None:
        suffix = f":interface={_quote(host.strip('[]'))}" if host else ""
        return _tls_endpoint(f"ssl:{port}{suffix}", *tls)
    if not host:
        return f"tcp:{port}"
    if host.startswith("["):
        return f"tcp6:{port}:interface={_quote(host[1:-1])}"
    return f"tcp:{port}:interface={host}"


def _endpoint_types() -> set[str]:
    """Twisted's server endpoint types, built in and from plugins (``le:``, ``onion:``...)."""
    from twisted.internet.interfaces import IStreamServerEndpointStringParser
    from twisted.plugin import getPlugins

    types = {"tcp", "tcp6", "unix", "ssl", "systemd"}
    types.update(p.prefix for p in getPlugins(IStreamServerEndpointStringParser))
    return types


def _quote(value: str) -> str:
    from twisted.internet.endpoints import quoteStringArgument
    quoted: str = quoteStringArgument(value)
    return quoted


def _tls_endpoint(base: str, cert_file: str, key_file: str, rest_of_chain: str | None) -> str:
    """``base`` plus the key, the certificate and, when the certificate file holds a chain
    (``fullchain.pem``), the rest of it (``ChainFiles``)."""
    endpoint = f"{base}:privateKey={_quote(key_file)}:certKey={_quote(cert_file)}"
    return endpoint + (f":extraCertChain={_quote(rest_of_chain)}" if rest_of_chain else "")


class Options(usage.Options):
    synopsis = "-c CONFIG [-l ENDPOINT]... [--tls-cert-file CERT --tls-key-file KEY]"
    longdesc = ("Serve many local model servers behind one OpenAI-compatible endpoint, "
                "starting and swapping them on demand. SIGHUP reloads the config without "
                "downtime.")
    optFlags = [
        ["watch-config", None, "Reload the config (without downtime) whenever the file "
         "changes."],
    ]
    optParameters = [
        ["config", "c", None, "The YAML configuration file (llama-swap compatible)."],
        ["config-dir", None, None,
         "A directory whose *.yaml and *.yml files are merged after --config, in name "
         "order, as llama-swap's -config-dir (docs/config-dir.md)."],
        ["drain-timeout", None, DEFAULT_DRAIN_TIMEOUT,
         "Seconds to let in-flight requests finish on shutdown.", float],
        ["tls-cert-file", None, None,
         "PEM certificate (a full chain allowed) for HTTPS on host:port listen addresses; "
         "needs --tls-key-file. The default listen address becomes ssl:8443."],
        ["tls-key-file", None, None, "PEM private key for --tls-cert-file."],
        ["state-file", None, None,
         "Where running models are recorded, so a restart after a crash kills what the "
         "crashed run left. Default: one file per config in $XDG_RUNTIME_DIR or /tmp; "
         "--state-file= turns it off."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self.chain_files = ChainFiles()

    def opt_listen(self, value: str) -> None:
        """Listen on a Twisted endpoint (tcp:8080:interface=127.0.0.1, unix:/run/x.sock,
        ssl:8443:privateKey=k.pem:certKey=c.pem, systemd:domain=INET:index=0) or host:port.
        Repeatable. Default tcp:8080."""
        self["listen"].append(value)

    opt_l = opt_listen

    def postOptions(self) -> None:
        if not self["config"] and not self["config-dir"]:
            raise usage.UsageError("--config or --config-dir is required")
        cert, key = self["tls-cert-file"], self["tls-key-file"]
        if bool(cert) != bool(key):
            raise usage.UsageError("--tls-cert-file and --tls-key-file must be given together")
        tls = (cert, key, self.chain_files.rest_of(cert)) if cert else None
        given: list[str] = self["listen"]
        if given:
            self["listen"] = [endpoint_from_listen(value, tls) for value in given]
        elif tls:
            given, self["listen"] = [DEFAULT_TLS_LISTEN], [_tls_endpoint(DEFAULT_TLS_LISTEN, *tls)]
        else:
            given, self["listen"] = [DEFAULT_LISTEN], [DEFAULT_LISTEN]
        for value, endpoint in zip(given, self["listen"], strict=True):
            _check_endpoint(value, endpoint)
        try:
            self["loaded"] = load_config(self["config"], config_dir=self["config-dir"])
        except ConfigError as e:
            print(str(e), file=sys.stderr)  # one line per problem, then any warnings
            raise SystemExit(1) from None


def _check_endpoint(given: str, endpoint: str) -> None:
    """Parse the endpoint now (reading TLS files), so that a typo is a usage error before
    anything starts, not a traceback from inside ``makeService``."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(reactor, endpoint)
    except Exception as e:  # the parsers raise ValueError, KeyError, OSError, SSL errors ...
        detail = f"{type(e).__name__}: {e}" if not isinstance(e, OSError) else str(e)
        if isinstance(e, IndexError | KeyError) and endpoint.startswith("systemd:"):
            detail = "no such socket was passed by systemd (LISTEN_FDS/LISTEN_FDNAMES)"
        raise usage.UsageError(f"--listen {given}: {detail}") from None


def makeService(options: Any) -> MultiService:
    """What ``twistd llamaswap`` runs: ``build_service``, in a process tuned for serving
    (``gctuning``: the process is llamaswap's own), logging through ``twistdlog``."""
    from twisted.internet import reactor

    twistd = getattr(options, "parent", None)  # twistd's own options: --logfile, -n ...
    observer = None
    if twistd is not None:
        destination = destination_for(twistd)
        if isinstance(destination, LogFile):
            _rotate_on_sigusr1(destination, reactor)
        if destination is not None:
            observer = text_observer(destination, reactor)
    top = build_service(options, top=_TwistdTop(observer))
    chain_files = getattr(options, "chain_files", None)
    if chain_files is not None:
        chain_files.remove()  # every endpoint is parsed (and its files read) by now
    swapper = top.getServiceNamed("llamaswap")
    assert isinstance(swapper, LlamaSwapService)
    notifier = top.getServiceNamed("systemd-notify")
    assert isinstance(notifier, SystemdNotifyService)
    _reload_on_sighup(swapper, notifier, reactor)
    reactor.callWhenRunning(tune_for_serving)
    return top


def _reload_on_sighup(swapper: LlamaSwapService, notifier: SystemdNotifyService,
                      reactor: Any) -> None:
    """SIGHUP reloads the config (twistd installs no handler of its own for it), telling
    systemd when the reload starts and ends."""
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(
        notifier.around_reload, swapper.reload_logging_errors))


def _rotate_on_sigusr1(log_file: LogFile, reactor: Any) -> None:
    """As twistd does for its own log file: SIGUSR1 rotates it, unless the signal is taken."""
    if not signal.getsignal(signal.SIGUSR1):
        signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(log_file.rotate))


class _TwistdTop(MultiService):
    """Hands its log observer to the twistd application it joins (twistd reads an
    application's ``ILogObserver`` component before it starts logging)."""

    def __init__(self, observer: ILogObserver | None) -> None:
        super().__init__()
        self._observer = observer

    def setServiceParent(self, parent: Any) -> None:
        if (self._observer is not None and isinstance(parent, Componentized)
                and parent.getComponent(ILogObserver) is None):
            parent.setComponent(ILogObserver, self._observer)
        super().setServiceParent(parent)


def build_service(options: Any, top: MultiService | None = None) -> MultiService:
    """The llamaswap service, then the systemd notifier.

    ``MultiService`` starts children in order and stops them in reverse: ``READY=1`` goes
    out once llamaswap is listening, ``STOPPING=1`` before it starts draining.
    """
    config: Config = options["loaded"]
    top = top if top is not None else MultiService()
    state_file = options["state-file"]
    if state_file is None:
        state_file = default_state_path(options["config"] or options["config-dir"])
    swapper = LlamaSwapService(config, drain_timeout=options["drain-timeout"],
                               state_file=state_file or None)
    for endpoint in options["listen"]:
        swapper.listen(endpoint)
    warn_if_exposed(options["listen"], config)  # once per address reachable beyond loopback
    if options["watch-config"]:
        swapper.watch_config()
    swapper.setName("llamaswap")
    swapper.setServiceParent(top)
    notifier = SystemdNotifyService(status=f"serving {len(config.models)} models")
    notifier.setName("systemd-notify")
    notifier.setServiceParent(top)
    return top
