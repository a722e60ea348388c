"""Scheduling benchmark: llama-swap's FIFO against llamaswap's swap-aware policy, same run.

Real llamaswap, real demo model servers that take ``--load`` seconds to become healthy, and
clients that stream their answers (``--tokens`` tokens, ``--token-delay`` apart). All models
are in one swap group, so only one runs at a time: every change of model is a swap.

Scenarios:
  agents  several coding agents, each calling model A a few times (2, 3, 4, ...) and B once
          per loop, with short think gaps; their different rhythms interleave their calls
  users   three users, each pinned to a different model, sending one request after another
  burst   a burst of mixed requests for three models at once

Per policy it prints the number of swaps (model starts), the makespan, and the p50, p99 and
max wait (time to the first byte of the answer). Run: ``python bench/scheduling.py``
(``--quick`` for a smaller run). Results: Markdown on stdout, JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import treq  # noqa: E402
from treq.client import HTTPClient  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.web.client import Agent, HTTPConnectionPool  # noqa: E402

from llamaswap.config import parse_config  # noqa: E402
from llamaswap.policy import ModelState  # noqa: E402
from llamaswap.service import LlamaSwapService  # noqa: E402


@dataclass
class Result:
    scenario: str
    policy: str
    requests: int
    errors: int
    swaps: int
    makespan: float
    wait_p50: float
    wait_p99: float
    wait_max: float
    waits: list[float] = field(default_factory=list, repr=False)


def config_text(policy: str, models: list[str], args: argparse.Namespace) -> str:
    lines = [f"startPort: {args.port}", "healthCheckTimeout: 60", "logLevel: warn",
             "routing:", "  scheduler:", f"    use: {policy}", "    heartbeat: 0",
             f"    queueTimeout: {args.max_wait}"]
    if policy == "swapaware":
        lines += ["    settings:", "      swapaware:", f"        holdTime: {args.hold}",
                  f"        batchTime: {args.batch}", f"        maxAge: {args.max_age}"]
    lines.append("models:")
    for name in models:
        lines += [f"  {name}:",
                  f"    cmd: {sys.executable} -m llamaswap.demo --port ${{PORT}} --quiet "
                  f"--model {name} --startup-delay {args.load} --token-delay {args.token_delay}"
                  f" --reply '{' '.join(['tok'] * args.tokens)}'",
                  "    checkEndpoint: /health", "    concurrencyLimit: 1000"]
    return "\n".join(lines) + "\n"


class Bench:
    def __init__(self, reactor: Any, policy: str, models: list[str],
                 args: argparse.Namespace) -> None:
        self.reactor = reactor
        config = parse_config(config_text(policy, models, args), f"bench-{policy}.yaml")
        self.service = LlamaSwapService(config, reactor, drain_timeout=1)
        self.starts = 0
        for process in self.service.processes.values():
            process.add_observer(self._observe)
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 64
        self.client = HTTPClient(Agent(reactor, pool=self.pool))
        self.waits: list[float] = []
        self.errors = 0
        self.first: float | None = None
        self.last = 0.0

    def _observe(self, process: Any, old: ModelState, new: ModelState) -> None:
        if new is ModelState.STARTING:
            self.starts += 1

    async def start(self) -> None:
        self.service.startService()
        self.port = self.reactor.listenTCP(0, self.service.site(), interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/v1/chat/completions"

    async def request(self, model: str) -> None:
        """One streamed chat completion; the wait is the time to its first byte."""
        sent = time.monotonic()
        self.first = sent if self.first is None else min(self.first, sent)
        body = json.dumps({"model": model, "stream": True,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        first_byte: list[float] = []
        try:
            response = await self.client.post(self.url, data=body, unbuffered=True,
                                              headers={"Content-Type": "application/json"})
            if response.code != 200:
                self.errors += 1
            await treq.collect(response, lambda chunk: first_byte.append(time.monotonic())
                               if not first_byte else None)
        except Exception:
            self.errors += 1
        done = time.monotonic()
        self.waits.append((first_byte[0] if first_byte else done) - sent)
        self.last = max(self.last, done)

    async def stop(self) -> None:
        await self.port.stopListening()
        await self.service.stopService()
        await self.pool.closeCachedConnections()


async def sleep(reactor: Any, seconds: float) -> None:
    await task.deferLater(reactor, seconds)


async def scenario_agents(bench: Bench, args: argparse.Namespace, rng: random.Random) -> None:
    async def agent(index: int) -> None:
        # Each agent calls its main model A a few times (tool-call loop), then B once; the
        # agents' rhythms differ, so their B calls do not line up.
        await sleep(bench.reactor, index * args.stagger)
        for _ in range(args.loops):
            for model in "A" * (2 + index) + "B":
                await bench.request(model)
                await sleep(bench.reactor, rng.uniform(0.1, args.think))
    await defer.gatherResults([defer.Deferred.fromCoroutine(agent(i))
                               for i in range(args.agents)])


async def scenario_users(bench: Bench, args: argparse.Namespace, rng: random.Random) -> None:
    async def user(model: str, index: int) -> None:
        await sleep(bench.reactor, index * 0.1)
        for _ in range(args.loops * 2):
            await bench.request(model)
            await sleep(bench.reactor, rng.uniform(0.1, args.think))
    await defer.gatherResults([defer.Deferred.fromCoroutine(user(m, i))
                               for i, m in enumerate(("A", "B", "C"))])


async def scenario_burst(bench: Bench, args: argparse.Namespace, rng: random.Random) -> None:
    models = [rng.choice("ABC") for _ in range(args.burst)]
    await defer.gatherResults([defer.Deferred.fromCoroutine(bench.request(m)) for m in models])


SCENARIOS: dict[str, tuple[list[str], Callable[..., Any]]] = {
    "agents": (["A", "B"], scenario_agents),
    "users": (["A", "B", "C"], scenario_users),
    "burst": (["A", "B", "C"], scenario_burst),
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run(reactor: Any, args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    for name in args.scenarios:
        models, scenario = SCENARIOS[name]
        for policy in ("fifo", "swapaware"):
            bench = Bench(reactor, policy, models, args)
            await bench.start()
            await scenario(bench, args, random.Random(args.seed))
            await bench.stop()
            results.append(Result(
                name, policy, len(bench.waits), bench.errors, bench.starts,
                bench.last - (bench.first or bench.last), percentile(bench.waits, 0.5),
                percentile(bench.waits, 0.99), max(bench.waits, default=0.0), bench.waits))
            print(f"  {name}/{policy}: {bench.starts} swaps, "
                  f"{results[-1].makespan:.1f}s", file=sys.stderr)
    return results


def report(results: list[Result], args: argparse.Namespace) -> str:
    lines = ["| scenario | policy | requests | errors | swaps | makespan s | wait p50 s | "
             "wait p99 s | wait max s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.scenario} | {r.policy} | {r.requests} | {r.errors} | {r.swaps} | "
                     f"{r.makespan:.1f} | {r.wait_p50:.2f} | {r.wait_p99:.2f} | "
                     f"{r.wait_max:.2f} |")
    lines += ["", "| scenario | swaps swapaware/fifo | makespan swapaware/fifo | "
              "max wait <= queueTimeout |", "|---|---|---|---|"]
    by = {(r.scenario, r.policy): r for r in results}
    for name in args.scenarios:
        fifo, aware = by[(name, "fifo")], by[(name, "swapaware")]
        lines.append(f"| {name} | {aware.swaps / max(fifo.swaps, 1):.2f} | "
                     f"{aware.makespan / max(fifo.makespan, 1e-9):.2f} | "
                     f"{'yes' if aware.wait_max <= args.max_wait else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--load", type=float, default=2.0, help="model load time, seconds")
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--token-delay", type=float, default=0.04)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--loops", type=int, default=4)
    parser.add_argument("--think", type=float, default=0.5, help="max think gap, seconds")
    parser.add_argument("--stagger", type=float, default=0.7)
    parser.add_argument("--burst", type=int, default=30)
    parser.add_argument("--hold", type=float, default=1.0)
    parser.add_argument("--batch", type=float, default=10.0)
    parser.add_argument("--max-age", type=float, default=30.0)
    parser.add_argument("--max-wait", type=float, default=120.0, help="queueTimeout")
    parser.add_argument("--port", type=int, default=17100, help="first model port")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="small loads, fewer loops")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" /
                        "scheduling.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.load, args.loops, args.burst, args.tokens = 0.5, 2, 10, 4

    def go(reactor: Any) -> defer.Deferred[None]:
        async def body() -> None:
            results = await run(reactor, args)
            print(report(results, args))
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(
                {"settings": {k: (str(v) if isinstance(v, Path) else v)
                              for k, v in vars(args).items()},
                 "results": [asdict(r) for r in results]}, indent=2))
        return defer.Deferred.fromCoroutine(body())

    task.react(go)


if __name__ == "__main__":
    main()
