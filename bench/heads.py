"""What reading request heads costs on llamaswap's channel, in memory, per request.

``python bench/heads.py`` feeds small keep-alive requests (a chat-completion ``POST`` with
the headers an OpenAI SDK sends, whole in one read, as they come on loopback) through
``HardenedSite``'s channel over an in-memory transport, to a resource that answers at once,
and prints microseconds per request (the best of five blocks of ``--requests``): the whole
of twisted.web's request path plus llamaswap's head checks (``web/strict.py``,
``web/framing.py``), without sockets or a model.

``--against DIR`` compares with another copy of the ``llamaswap`` package (for example one
exported from an older commit with ``git archive``): both run in turns, each in its own
process, ``--rounds`` times, and the median of each and their ratio are printed. On a
shared machine only the ratio means much; times are the process's CPU time, so that time
spent waiting for a core does not count.

``--proxied --against DIR`` measures the same through the whole proxy instead: two
llamaswap instances under ``twistd`` (this tree's and ``DIR``'s, each with a fake model of
its own, as ``bench/run.py`` starts them), loaded in turns with ``wrk`` (small
non-streaming chat completions, 50 connections; who goes first alternates), reporting each
instance's CPU time per request (``bench/run.py``'s ``proxy CPU ms per request`` row).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

HEAD = (b"POST /v1/chat/completions HTTP/1.1\r\n"
        b"Host: 127.0.0.1:8080\r\n"
        b"Accept: application/json\r\n"
        b"Content-Type: application/json\r\n"
        b"User-Agent: OpenAI/Python 1.54.0\r\n"
        b"X-Stainless-Lang: python\r\n"
        b"Authorization: Bearer sk-not-a-real-key\r\n"
        b"Content-Length: %d\r\n\r\n")
BODY = b'{"model":"bench","messages":[{"role":"user","content":"hi"}]}'


def measure(requests: int) -> float:
    """Microseconds per request, over ``requests`` requests on one connection."""
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.web.resource import Resource
    from twisted.web.server import Request

    from llamaswap.web.fast import FastPath
    from llamaswap.web.limits import LimitedRequest
    from llamaswap.web.site import HardenedSite

    class Answer(Resource):
        isLeaf = True
        max_request_size = 1 << 20

        def render(self, request: Request) -> bytes:
            return b"ok"

    site = HardenedSite(Answer(), reactor=Clock(), fast_path=FastPath.off())
    site.requestFactory = LimitedRequest
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    request = HEAD % len(BODY) + BODY
    for _ in range(200):  # warm up
        channel.dataReceived(request)
    transport.clear()
    best = float("inf")
    for _ in range(5):  # the best of five blocks: the least disturbed by other work
        start = time.process_time()
        for _ in range(requests):
            channel.dataReceived(request)
            transport.clear()
        best = min(best, time.process_time() - start)
    return best / requests * 1e6


def compare(against: str, rounds: int, requests: int) -> None:
    runs: dict[str, list[float]] = {"this": [], "against": []}
    for _ in range(rounds):
        for name, path in (("this", str(REPO)), ("against", against)):
            env = {**os.environ, "PYTHONPATH": path}
            out = subprocess.run([sys.executable, __file__, "--requests", str(requests)],
                                 env=env, check=True, capture_output=True, text=True,
                                 cwd=path).stdout
            runs[name].append(float(out.split()[0]))
    this, other = statistics.median(runs["this"]), statistics.median(runs["against"])
    print(f"this tree:  {this:.1f} us/request (median of {rounds})")
    print(f"against:    {other:.1f} us/request (median of {rounds})")
    print(f"ratio this/against: {this / other:.3f}")


def compare_proxied(against: str, rounds: int, duration: float) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import tempfile

    import run as harness  # bench/run.py: its process and load helpers

    children = harness.Children()
    cpu: dict[str, list[float]] = {"this": [], "against": []}
    with tempfile.TemporaryDirectory(prefix="llamaswap-heads-") as tmp:
        workdir = Path(tmp)
        try:
            instances = {}
            for name, path in (("this", str(REPO)), ("against", against)):
                os.environ["PYTHONPATH"] = path  # (start_llamaswap passes it on)
                config = harness.own_upstream_config(workdir, name)
                instances[name] = harness.start_llamaswap(children, workdir, config, "default")
                harness.first_byte(instances[name].port, harness.post_request("bench"))
            for turn in range(rounds):
                order = list(instances.items())
                for name, instance in order if turn % 2 == 0 else order[::-1]:  # ABBA
                    before = harness.cpu_seconds([instance.proc.pid])
                    result = harness.run_wrk(instance.port, duration, workdir)
                    used = harness.cpu_seconds([instance.proc.pid]) - before
                    cpu[name].append(used * 1e6 / max(1, result["requests"]))
        finally:
            children.stop_all()
    this, other = statistics.median(cpu["this"]), statistics.median(cpu["against"])
    print(f"this tree:  {this:.0f} us CPU/request (median of {rounds}: {cpu['this']})")
    print(f"against:    {other:.0f} us CPU/request (median of {rounds}: {cpu['against']})")
    print(f"ratio this/against: {this / other:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--against", help="a directory holding another llamaswap package")
    parser.add_argument("--proxied", action="store_true",
                        help="through the whole proxy, with wrk (needs --against)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of wrk per turn")
    args = parser.parse_args()
    if args.proxied and args.against:
        compare_proxied(args.against, args.rounds, args.duration)
    elif args.against:
        compare(args.against, args.rounds, args.requests)
    else:
        print(f"{measure(args.requests):.2f} us/request")


if __name__ == "__main__":
    main()
