"""llamaswap's benchmark suite: llamaswap, nginx and direct access side by side, in one run.

``python bench/run.py`` (about 8 minutes) or ``python bench/run.py --quick`` (about a minute)
writes ``bench/results/<time>.json`` and ``.md`` (and ``latest.json``/``latest.md``) and
prints the Markdown table. Every figure is a median over repeats, and every target is checked
as a ratio against a baseline measured in the same run, because absolute numbers from a shared
machine mean little.

What runs, all on loopback, all bounded in time, all stopped at the end:

- ``bench/upstream.py``, a fast fake model server (checked alone first: if it cannot serve
  far more than the proxies, the comparison would be meaningless);
- llamaswap under ``twistd`` with a generated config, on the reactor given by ``--reactor``
  (more reactors are compared on the throughput scenarios with ``--reactors``);
- nginx, if installed, with its own config (one worker, buffering off, upstream keep-alive);
  without nginx the run says so and targets are checked against direct access instead;
- load from ``wrk`` (non-streaming) and ``bench/client.py`` (streaming).

Scenarios: 1 swap readiness overhead, 2 paced streaming, 3 unpaced streaming, 4 small
non-streaming requests, 5 memory (idle, 1,000 open streams, growth over many requests).
``--only trees --against CHECKOUT`` measures another checkout's llamaswap (e.g. a worktree of
``main``) beside this one's, interleaved, and reports this one's figures as ratios of its.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
UPSTREAM = BENCH / "upstream.py"
FLOOR = BENCH / "floor.py"
CLIENT = BENCH / "client.py"
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
REQUEST_BODY = '{"model":"bench","messages":[{"role":"user","content":"hi"}]}'
WRK_SCRIPT = f"""wrk.method = "POST"
wrk.body = '{REQUEST_BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass
class Plan:
    """How long and how often each scenario runs."""

    repeats: int
    duration: float  # seconds per load measurement
    swap_repeats: int
    paced_concurrency: tuple[int, ...]
    unpaced_concurrency: tuple[int, ...]
    held_streams: int
    growth_requests: int
    startup_delay: float = 0.1


FULL = Plan(repeats=3, duration=4.0, swap_repeats=7, paced_concurrency=(1, 50, 200),
            unpaced_concurrency=(50, 200), held_streams=1000, growth_requests=100_000)
QUICK = Plan(repeats=1, duration=1.5, swap_repeats=3, paced_concurrency=(1, 50, 200),
             unpaced_concurrency=(50, 200), held_streams=200, growth_requests=10_000)
TINY = Plan(repeats=1, duration=0.3, swap_repeats=1, paced_concurrency=(4,),
            unpaced_concurrency=(4,), held_streams=20, growth_requests=300)


# -- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes have used so far (Linux ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for {pid}")


def http_get(port: int, path: str, timeout: float = 1.0) -> int:
    """Status of a ``GET`` on loopback, 0 if the connection failed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
            head = s.recv(12)
            return int(head[9:12]) if len(head) >= 12 else 0
    except (OSError, ValueError):
        return 0


def wait_healthy(port: int, path: str, timeout: float, poll: float = 0.001) -> float:
    """Seconds until ``GET path`` answers 200, polling every ``poll`` seconds."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if http_get(port, path) == 200:
            return time.perf_counter() - started
        time.sleep(poll)
    raise RuntimeError(f"port {port}{path} not healthy after {timeout}s")


def first_byte(port: int, raw: bytes, timeout: float = 30.0) -> tuple[float, int]:
    """Seconds from sending ``raw`` to the first response byte, and the status."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        started = time.perf_counter()
        s.sendall(raw)
        head = s.recv(1)
        elapsed = time.perf_counter() - started
        head += s.recv(64)
        return elapsed, int(head[9:12])


def post_request(model: str) -> bytes:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    return (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
            f"{body}").encode()


class Children:
    """Every process the benchmark starts, stopped (and reaped) when the run ends."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


@dataclass
class Llamaswap:
    proc: subprocess.Popen[Any]
    port: int
    reactor: str


def llamaswap_config(workdir: Path, plan: Plan) -> Path:
    """Model ``bench`` for the load scenarios; ``swap-a``/``swap-b`` swap with each other."""
    python = sys.executable
    # Free ports picked now, not ${PORT}: its range (startPort 5800) is shared with every
    # other llamaswap on the machine, and a clash would benchmark someone else's server.
    bench, a, b = free_port(), free_port(), free_port()
    swap_cmd = f"{python} {UPSTREAM} --startup-delay {plan.startup_delay} --port"
    text = f"""\
healthCheckTimeout: 30
models:
  bench:
    cmd: {python} {UPSTREAM} --uvloop --port {bench}
    proxy: http://localhost:{bench}
    concurrencyLimit: 100000
  swap-a:
    cmd: {swap_cmd} {a}
    proxy: http://localhost:{a}
    unloadTimeout: 5
  swap-b:
    cmd: {swap_cmd} {b}
    proxy: http://localhost:{b}
    unloadTimeout: 5
routing:  # llama-swap's scheduling: the default holds a model 1 s (holdTime) before a swap
  scheduler:
    use: fifo
groups:
  load:
    swap: false
    exclusive: false
    persistent: true
    members: [bench]
  swapping:
    swap: true
    exclusive: false
    members: [swap-a, swap-b]
"""
    path = workdir / "llamaswap.yaml"
    path.write_text(text)
    return path


def start_llamaswap(children: Children, workdir: Path, config: Path, reactor: str,
                    fast_path: str | None = None, tree: Path | None = None,
                    label: str | None = None) -> Llamaswap:
    """llamaswap under twistd; ``fast_path``: its ``LLAMASWAP_FAST_PATH`` (``None``: as this
    process has it); ``tree``: the checkout whose ``llamaswap`` package runs (first on
    ``PYTHONPATH``; ``None``: as this process has it)."""
    port = free_port()
    env = dict(os.environ)
    if fast_path is not None:
        env["LLAMASWAP_FAST_PATH"] = fast_path
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(tree), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    if label is None:
        label = (reactor if fast_path is None
                 else f"{reactor}-fast-{fast_path.replace(',', '+')}")
    argv = [*TWISTD, "-n", "--pidfile=", f"--logfile={workdir / f'llamaswap-{label}.log'}"]
    if reactor != "default":
        argv.append(f"--reactor={reactor}")
    # backlog: like nginx's and the upstream's, so 1,000 connections at once are not refused
    argv += ["llamaswap", "-c", str(config),
             "-l", f"tcp:{port}:interface=127.0.0.1:backlog=4096"]
    proc = children.start(argv, cwd=workdir, env=env)
    wait_healthy(port, "/health", 30, poll=0.02)
    return Llamaswap(proc, port, reactor)


def running_pid(llamaswap: Llamaswap, model: str) -> tuple[int, str]:
    """PID and proxy URL of a running model, from ``/running``."""
    with socket.create_connection(("127.0.0.1", llamaswap.port), timeout=5) as s:
        s.sendall(b"GET /running HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    for entry in body["running"]:
        if entry["model"] == model:
            return int(entry["pid"]), str(entry["proxy"])
    raise RuntimeError(f"{model} is not running")


NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    upstream model {{
        server 127.0.0.1:{upstream};
        keepalive 256;  # idle connections kept, as llamaswap's Forwarder
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def start_nginx(children: Children, workdir: Path, upstream_port: int
                ) -> tuple[subprocess.Popen[Any], int] | None:
    """nginx as a plain reverse proxy in front of the upstream, or None if not installed."""
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)
    if binary is None:
        return None
    prefix = workdir / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    for path in (workdir, prefix, prefix / "tmp"):
        path.chmod(0o777)  # its worker may run as an unprivileged user
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, upstream=upstream_port, port=port))
    proc = children.start([binary, "-p", str(prefix), "-c", str(conf)],
                          stderr=open(prefix / "stderr.log", "wb"))
    wait_healthy(port, "/health", 10, poll=0.02)
    return proc, port


def nginx_version() -> str | None:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                       else None)
    if binary is None:
        return None
    out = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
    return out.split("/", 1)[-1] if "/" in out else out


def nginx_pids(proc: subprocess.Popen[Any]) -> list[int]:
    """The nginx master and its workers."""
    pids = [proc.pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == proc.pid:
                    pids.append(int(entry))
    return pids


def nginx_rss(proc: subprocess.Popen[Any]) -> float:
    """RSS of the nginx master plus its workers."""
    return round(sum(rss_mb(pid) for pid in nginx_pids(proc)), 1)


# -- load ----------------------------------------------------------------------------------


def run_client(port: int, concurrency: int, duration: float, tokens: int,
               interval: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(CLIENT), "--port", str(port), "--concurrency", str(concurrency),
         "--duration", str(duration), "--tokens", str(tokens), "--interval", str(interval)],
        capture_output=True, text=True, timeout=duration + 60, check=True)
    return json.loads(out.stdout)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(port: int, duration: float, workdir: Path, connections: int = 50
            ) -> dict[str, Any]:
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
         "-s", str(script), f"http://127.0.0.1:{port}/v1/chat/completions"],
        capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    result: dict[str, Any] = {"connections": connections}
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["requests_per_s"] = float(match.group(1)) if match else 0.0
    match = re.search(r"(\d+) requests in", out)
    result["requests"] = int(match.group(1)) if match else 0
    for pct in ("50", "99"):
        match = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out)
        result[f"latency_p{pct}_ms"] = (round(float(match.group(1)) * _UNITS[match.group(2)], 3)
                                        if match else None)
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(match.group(1)) if match else 0
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if match:
        errors += sum(int(g) for g in match.groups())
    result["errors"] = errors
    return result


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-key median of numeric results (``None`` where every run had none)."""
    merged: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
        if not values:
            merged[key] = None
        elif key in ("errors", "completed", "requests"):
            merged[key] = sum(values)
        else:
            merged[key] = round(statistics.median(values), 3)
    merged["repeats"] = len(runs)
    return merged


# -- scenarios -----------------------------------------------------------------------------


@dataclass
class Run:
    plan: Plan
    workdir: Path
    children: Children
    targets: dict[str, int]  # name -> port: llamaswap, nginx (if any), direct
    llamaswap: Llamaswap
    nginx: subprocess.Popen[Any] | None
    results: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print
    proxy_pids: dict[str, Callable[[], list[int]]] = field(default_factory=dict)
    """Per proxy target, its processes: CPU time per request is measured for these."""

    def side_by_side(self, measure: Callable[[int], dict[str, Any]],
                     targets: dict[str, int] | None = None) -> dict[str, Any]:
        """``measure(port)`` for every target, interleaved per repeat, medians per target."""
        targets = targets or self.targets
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for _ in range(self.plan.repeats):
            for name, port in targets.items():
                runs[name].append(self._with_cpu(name, measure, port))
        return {name: median_of(r) for name, r in runs.items()}


    def _with_cpu(self, name: str, measure: Callable[[int], dict[str, Any]],
                  port: int) -> dict[str, Any]:
        """``measure(port)`` plus the proxy's CPU milliseconds per request or stream: unlike
        throughput on a shared machine, it does not depend on what else is running."""
        pids = self.proxy_pids[name]() if name in self.proxy_pids else []
        before = cpu_seconds(pids)
        result = measure(port)
        units = result.get("completed") or result.get("requests")
        result["cpu_ms_per_unit"] = (round((cpu_seconds(pids) - before) * 1000 / units, 4)
                                     if pids and units else None)
        return result


def scenario_upstream_alone(run: Run, upstream_port: int) -> None:
    """The upstream must be much faster than any proxy in front of it."""
    plan = run.plan
    result: dict[str, Any] = {
        "unpaced_streams": run_client(upstream_port, max(plan.unpaced_concurrency),
                                      plan.duration, 16, 0),
    }
    if have_wrk():
        result["non_streaming"] = run_wrk(upstream_port, plan.duration, run.workdir)
    run.results["upstream_alone"] = result
    run.log(f"upstream alone: {json.dumps(result)}")


def scenario_swap(run: Run) -> None:
    """1. Cold start and A->B swap, minus what the upstream itself needs."""
    plan = run.plan
    ready, exits = [], []
    for _ in range(plan.swap_repeats):
        port = free_port()
        started = time.perf_counter()
        proc = run.children.start([sys.executable, str(UPSTREAM), "--port", str(port),
                                   "--startup-delay", str(plan.startup_delay)])
        wait_healthy(port, "/health", 30)
        ready.append(time.perf_counter() - started)
        stopping = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        exits.append(time.perf_counter() - stopping)
        run.children.stop(proc)
    port = run.llamaswap.port
    cold, swap = [], []
    for _ in range(plan.swap_repeats):
        for model in ("swap-a", "swap-b"):
            unload(port, model)
        elapsed, status = first_byte(port, post_request("swap-a"))
        assert status == 200, f"cold request answered {status}"
        cold.append(elapsed)
        elapsed, status = first_byte(port, post_request("swap-b"))
        assert status == 200, f"swap request answered {status}"
        swap.append(elapsed)
    for model in ("swap-a", "swap-b"):
        unload(port, model)
    ms = 1000.0
    direct_ready = statistics.median(ready) * ms
    direct_exit = statistics.median(exits) * ms
    cold_ms = statistics.median(cold) * ms
    swap_ms = statistics.median(swap) * ms
    run.results["swap"] = {
        "repeats": plan.swap_repeats, "startup_delay_ms": plan.startup_delay * ms,
        "direct_ready_ms": round(direct_ready, 2), "direct_exit_ms": round(direct_exit, 2),
        "cold_first_byte_ms": round(cold_ms, 2), "swap_first_byte_ms": round(swap_ms, 2),
        "cold_overhead_ms": round(cold_ms - direct_ready, 2),
        "swap_overhead_ms": round(swap_ms - direct_exit - direct_ready, 2),
        "samples_ms": {"direct_ready": [round(v * ms, 2) for v in ready],
                       "direct_exit": [round(v * ms, 2) for v in exits],
                       "cold": [round(v * ms, 2) for v in cold],
                       "swap": [round(v * ms, 2) for v in swap]},
    }
    summary = {k: v for k, v in run.results["swap"].items() if k != "samples_ms"}
    run.log(f"swap: {json.dumps(summary)}")


def unload(port: int, model: str) -> None:
    raw = (f"POST /api/models/unload/{model} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
           "content-length: 0\r\n\r\n").encode()
    first_byte(port, raw)


def scenario_streaming(run: Run, name: str, concurrency: tuple[int, ...], tokens: int,
                       interval: float) -> None:
    """2./3. Streams back to back on ``concurrency`` connections."""
    results = {}
    for c in concurrency:
        results[str(c)] = run.side_by_side(
            lambda port, c=c: run_client(port, c, run.plan.duration, tokens, interval))
        run.log(f"{name} c={c}: {json.dumps(results[str(c)])}")
    run.results[name] = {"tokens": tokens, "interval_ms": interval * 1000, "by_concurrency":
                         results}


def scenario_non_streaming(run: Run) -> None:
    """4. Small non-streaming requests with wrk, 50 connections."""
    if not have_wrk():
        run.results["non_streaming"] = {"skipped": "wrk is not installed"}
        run.log("non-streaming: skipped, wrk is not installed")
        return
    run.results["non_streaming"] = run.side_by_side(
        lambda port: run_wrk(port, run.plan.duration, run.workdir))
    run.log(f"non-streaming: {json.dumps(run.results['non_streaming'])}")


def scenario_memory(run: Run, idle_rss: float) -> None:
    """5. RSS idle, with many open streams, and over many requests."""
    plan = run.plan
    pid = run.llamaswap.proc.pid
    result: dict[str, Any] = {"idle_rss_mb": idle_rss, "held_streams": plan.held_streams}
    held = hold_streams(run.llamaswap.port, plan.held_streams, lambda: rss_mb(pid))
    result["held_started"], result["held_rss_mb"] = held
    if run.nginx is not None:
        nginx_pid_rss = nginx_rss(run.nginx)
        held = hold_streams(run.targets["nginx"], plan.held_streams,
                            lambda: nginx_rss(run.nginx))  # type: ignore[arg-type]
        result["nginx_idle_rss_mb"], result["nginx_held_rss_mb"] = nginx_pid_rss, held[1]
    if have_wrk():
        samples = [rss_mb(pid)]
        done = 0
        burst = max(1.0, plan.duration)
        deadline = time.monotonic() + 120
        while done < plan.growth_requests and time.monotonic() < deadline:
            done += run_wrk(run.llamaswap.port, burst, run.workdir)["requests"]
            samples.append(rss_mb(pid))
        # growth after the first burst: the first one warms caches and pools
        result.update(growth_requests=done, growth_rss_samples_mb=samples,
                      growth_mb=round(samples[-1] - samples[min(1, len(samples) - 1)], 1))
    result["idle_rss_after_mb"] = rss_mb(pid)
    run.results["memory"] = result
    run.log(f"memory: {json.dumps(result)}")


def hold_streams(port: int, count: int, measure: Callable[[], float]) -> tuple[int, float]:
    """Open ``count`` long streams through ``port``; RSS once all have started."""
    proc = subprocess.Popen(
        [sys.executable, str(CLIENT), "--port", str(port), "--hold", str(count),
         "--tokens", "10000", "--interval", "0.5", "--duration", "60"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        started = json.loads(line)["held"] if line else 0
        time.sleep(0.5)
        rss = measure()
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.5)  # let the proxy notice the closed connections
    return started, rss


def own_upstream_config(workdir: Path, reactor: str) -> Path:
    """Model ``bench`` on an upstream of its own, like the main instance's. (Sharing the main
    instance's upstream is not possible: llamaswap refuses to start a model whose port is
    already taken by another program.)"""
    path = workdir / f"llamaswap-{reactor}.yaml"
    port = free_port()
    path.write_text(f"""\
models:
  bench:
    cmd: {sys.executable} {UPSTREAM} --uvloop --port {port}
    proxy: http://localhost:{port}
    concurrencyLimit: 100000
""")
    return path


def scenario_reactors(run: Run, reactors: list[str]) -> None:
    """Throughput of llamaswap on other reactors, against the main instance in the same run;
    a run with errors is reported as such, not as a throughput."""
    results: dict[str, Any] = {}
    for reactor in reactors:
        if reactor == run.llamaswap.reactor:
            continue
        try:
            config = own_upstream_config(run.workdir, reactor)
            instance = start_llamaswap(run.children, run.workdir, config, reactor)
        except Exception as e:  # an unavailable reactor (uvloop not installed) is reported
            results[reactor] = {"error": str(e)}
            continue
        try:
            first_byte(instance.port, post_request("bench"))  # starts its model
            targets = {run.llamaswap.reactor: run.llamaswap.port, reactor: instance.port}
            results[reactor] = {"unpaced_50": run.side_by_side(
                lambda port: run_client(port, 50, run.plan.duration, 16, 0), targets)}
            if have_wrk():
                results[reactor]["non_streaming"] = run.side_by_side(
                    lambda port: run_wrk(port, run.plan.duration, run.workdir), targets)
        finally:
            run.children.stop(instance.proc)
        run.log(f"reactor {reactor}: {json.dumps(results[reactor])}")
    run.results["reactors"] = results


@contextlib.contextmanager
def side_instances(run: Run, prefix: str,
                   settings: dict[str, dict[str, Any]]) -> Iterator[dict[str, int]]:
    """One llamaswap per label, each on an upstream of its own (its config named
    ``<prefix>-<label>``) with its model started (``settings``: ``start_llamaswap``'s keyword
    arguments per label); yields their ports by label, for ``Run.side_by_side``, and stops
    them all afterwards."""
    instances: dict[str, Llamaswap] = {}
    try:
        for label, kwargs in settings.items():
            config = own_upstream_config(run.workdir, f"{prefix}-{label.replace(',', '+')}")
            instances[label] = start_llamaswap(run.children, run.workdir, config,
                                               run.llamaswap.reactor, **kwargs)
            first_byte(instances[label].port, post_request("bench"))  # starts its model
            pid = instances[label].proc.pid
            run.proxy_pids[label] = lambda pid=pid: [pid]
        yield {label: instance.port for label, instance in instances.items()}
    finally:
        for label, instance in instances.items():
            run.children.stop(instance.proc)
            run.proxy_pids.pop(label, None)


def scenario_fast_path(run: Run, variants: list[str]) -> None:
    """Each fast-path setting (``LLAMASWAP_FAST_PATH``: ``off``, one piece, ``on``) on an
    instance of its own, all measured side by side, interleaved per repeat: what each piece
    of ``llamaswap/web/fast/`` buys alone (proxy CPU per unit is the figure to read)."""
    settings = {variant: {"fast_path": variant} for variant in variants}
    with side_instances(run, "fast", settings) as targets:
        results: dict[str, Any] = {"unpaced_50": run.side_by_side(
            lambda port: run_client(port, 50, run.plan.duration, 16, 0), targets)}
        run.log(f"fast path, unpaced@50: {json.dumps(results['unpaced_50'])}")
        if have_wrk():
            results["non_streaming"] = run.side_by_side(
                lambda port: run_wrk(port, run.plan.duration, run.workdir), targets)
            run.log(f"fast path, non-streaming: {json.dumps(results['non_streaming'])}")
    run.results["fast_path"] = results


def scenario_trees(run: Run, trees: dict[str, Path]) -> None:
    """llamaswap from other checkouts (``--against``: ``baseline``) and from this one
    (``candidate``), each on an upstream of its own, measured side by side and interleaved
    per repeat on the load scenarios: what a branch changes, against ``main``, in one run."""
    results: dict[str, Any] = {"trees": {name: str(tree) for name, tree in trees.items()}}
    settings = {name: {"tree": tree, "label": f"tree-{name}"} for name, tree in trees.items()}
    with side_instances(run, "tree", settings) as targets:
        # One stream at a time, twice: 32 tokens 10 ms apart leave the request path cold
        # (its code and data out of the CPU caches) by the next request; 1-token streams back
        # to back keep it warm. The first byte's latency differs by ~0.4 ms between the two.
        for key, c, tokens, interval in (("paced_1", 1, 32, 0.01),
                                         ("unpaced_1", 1, 1, 0),
                                         ("paced_50", 50, 32, 0.01),
                                         ("unpaced_50", 50, 16, 0),
                                         ("unpaced_200", 200, 16, 0)):
            results[key] = run.side_by_side(
                lambda port, c=c, tokens=tokens, interval=interval: run_client(
                    port, c, run.plan.duration, tokens, interval), targets)
            run.log(f"trees, {key}: {json.dumps(results[key])}")
        if have_wrk():
            results["non_streaming"] = run.side_by_side(
                lambda port: run_wrk(port, run.plan.duration, run.workdir), targets)
            run.log(f"trees, non-streaming: {json.dumps(results['non_streaming'])}")
    run.results["trees"] = results


def scenario_floor(run: Run, upstream_port: int) -> None:
    """The fastest a Python proxy could be, and one on Twisted's transports: bare byte relays
    (``bench/floor.py``) measured beside llamaswap and the reference on unpaced streams and
    small requests."""
    targets: dict[str, int] = {name: port for name, port in run.targets.items()
                               if name in ("llamaswap", "nginx")}
    procs = []
    for name, extra in (("python-floor", []), ("twisted-floor", ["--twisted"])):
        port = free_port()
        proc = run.children.start([sys.executable, str(FLOOR), "--listen", str(port),
                                   "--upstream", str(upstream_port), *extra])
        wait_healthy(port, "/health", 10, poll=0.02)
        targets[name] = port
        run.proxy_pids[name] = lambda pid=proc.pid: [pid]
        procs.append(proc)
    result: dict[str, Any] = {"unpaced_50": run.side_by_side(
        lambda p: run_client(p, 50, run.plan.duration, 16, 0), targets)}
    if have_wrk():
        result["non_streaming"] = run.side_by_side(
            lambda p: run_wrk(p, run.plan.duration, run.workdir), targets)
    for proc in procs:
        run.children.stop(proc)
    run.results["floor"] = result
    run.log(f"floor: {json.dumps(result)}")


# -- targets and report --------------------------------------------------------------------


def check_targets(results: dict[str, Any], reference: str) -> list[dict[str, Any]]:
    """Each target of issue 7 as {name, value, limit, met}, against ``reference``."""
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float | None, higher_is_better: bool,
            unit: str) -> None:
        met = None if value is None or limit is None else (
            value >= limit if higher_is_better else value <= limit)
        checks.append({"target": name, "value": value, "limit": limit, "unit": unit,
                       "met": met})

    swap = results.get("swap")
    if swap:
        add("swap readiness overhead (cold) <= 30 ms", swap["cold_overhead_ms"], 30, False, "ms")
        add("A->B swap overhead <= 30 ms", swap["swap_overhead_ms"], 30, False, "ms")
    paced = results.get("paced", {}).get("by_concurrency", {})
    if paced:
        c = "200" if "200" in paced else max(paced, key=int)
        ours, ref = paced[c]["llamaswap"], paced[c][reference]
        add(f"paced@{c} streams/s >= 0.95x {reference}", ratio(ours["streams_per_s"],
            ref["streams_per_s"]), 0.95, True, "x")
        add(f"paced@{c} gap p99 <= {reference} + 5 ms", diff(ours["gap_p99_ms"],
            ref["gap_p99_ms"]), 5, False, "ms over")
        add(f"paced@{c} TTFB p50 <= {reference} + 2 ms", diff(ours["ttfb_p50_ms"],
            ref["ttfb_p50_ms"]), 2, False, "ms over")
    for c, row in results.get("unpaced", {}).get("by_concurrency", {}).items():
        add(f"unpaced@{c} streams/s >= 0.5x {reference}", ratio(
            row["llamaswap"]["streams_per_s"], row[reference]["streams_per_s"]), 0.5, True, "x")
    plain = results.get("non_streaming", {})
    if "llamaswap" in plain:
        add(f"non-streaming requests/s >= 0.5x {reference}", ratio(
            plain["llamaswap"]["requests_per_s"], plain[reference]["requests_per_s"]),
            0.5, True, "x")
    memory = results.get("memory")
    if memory:
        add("RSS idle <= 80 MB", memory["idle_rss_mb"], 80, False, "MB")
        add(f"RSS with {memory['held_streams']} open streams <= 200 MB",
            memory["held_rss_mb"], 200, False, "MB")
    return checks


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 3)


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.1f}"
        return f"{value:.3f}" if 0 < abs(value) < 0.1 else f"{value:.2f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The whole run as Markdown tables (the README's Performance section uses this)."""
    r = report["results"]
    names = report["targets"]
    reference = report["reference"]
    lines = [f"Run {report['started']} ({report['mode']}), reactor `{report['reactor']}`, "
             f"{report['machine']['cpu']} ({report['machine']['cores']} cores), "
             f"Python {report['machine']['python']}, Twisted {report['machine']['twisted']}, "
             f"nginx {report['machine']['nginx'] or 'not installed'}. "
             f"Medians over {report['plan']['repeats']} repeat(s).", ""]
    if report["reference"] != "nginx":
        lines += ["**nginx is not installed: targets are checked against direct access.**", ""]
    swap = r.get("swap")
    if swap:
        lines += ["| swap (upstream start-up delay "
                  f"{swap['startup_delay_ms']:.0f} ms, {swap['repeats']} repeats) | llamaswap "
                  "| direct | overhead |", "|---|---:|---:|---:|",
                  f"| cold request → first byte, vs. start + poll directly | "
                  f"{fmt(swap['cold_first_byte_ms'])} ms | {fmt(swap['direct_ready_ms'])} ms | "
                  f"**{fmt(swap['cold_overhead_ms'])} ms** |",
                  f"| A→B swap → first byte, vs. A's exit + B's start | "
                  f"{fmt(swap['swap_first_byte_ms'])} ms | "
                  f"{fmt(swap['direct_exit_ms'])} + {fmt(swap['direct_ready_ms'])} ms | "
                  f"**{fmt(swap['swap_overhead_ms'])} ms** |", ""]
    header = "| scenario | metric | " + " | ".join(names) + " | llamaswap / " + \
        report["reference"] + " |"
    lines += [header, "|---|---|" + "---:|" * (len(names) + 1)]
    for key, title in (("paced", "paced {tokens}×{interval_ms:g} ms"),
                       ("unpaced", "unpaced {tokens} tokens")):
        block = r.get(key)
        if not block:
            continue
        for c, row in block["by_concurrency"].items():
            label = title.format(**block) + f", {c} streams"
            for metric, unit in (("streams_per_s", "streams/s"), ("ttfb_p50_ms", "TTFB p50 ms"),
                                 ("ttfb_p99_ms", "TTFB p99 ms"), ("gap_p50_ms", "gap p50 ms"),
                                 ("gap_p99_ms", "gap p99 ms"),
                                 ("cpu_ms_per_unit", "proxy CPU ms per stream")):
                if key == "unpaced" and metric.startswith("gap"):
                    continue
                values = [row[n][metric] for n in names]
                versus = compare(row["llamaswap"][metric], row[reference][metric], metric)
                lines.append(f"| {label} | {unit} | " + " | ".join(fmt(v) for v in values) +
                             f" | {versus} |")
            errors = [row[n]["errors"] for n in names]
            if any(errors):
                lines.append(f"| {label} | errors | " + " | ".join(map(str, errors)) + " | |")
    plain = r.get("non_streaming", {})
    if "llamaswap" in plain:
        for metric, unit in (("requests_per_s", "requests/s"), ("latency_p50_ms", "p50 ms"),
                             ("latency_p99_ms", "p99 ms"),
                             ("cpu_ms_per_unit", "proxy CPU ms per request")):
            values = [plain[n][metric] for n in names]
            versus = compare(plain["llamaswap"][metric], plain[reference][metric], metric)
            lines.append("| non-streaming, 50 connections (wrk) | " + unit + " | " +
                         " | ".join(fmt(v) for v in values) + f" | {versus} |")
    memory = r.get("memory")
    if memory:
        lines += ["", "| memory | llamaswap | nginx |", "|---|---:|---:|",
                  f"| RSS idle | {fmt(memory['idle_rss_mb'])} MB | "
                  f"{fmt(memory.get('nginx_idle_rss_mb'))} MB |",
                  f"| RSS with {memory['held_streams']} open streams "
                  f"({memory['held_started']} started) | {fmt(memory['held_rss_mb'])} MB | "
                  f"{fmt(memory.get('nginx_held_rss_mb'))} MB |"]
        if "growth_mb" in memory:
            lines.append(f"| RSS growth over {memory['growth_requests']:,} requests "
                         f"(after the first burst) | {fmt(memory['growth_mb'])} MB | — |")
    reactors = r.get("reactors")
    if reactors:
        lines += ["", f"| reactor (vs. `{report['reactor']}` in the same run) | unpaced@50 "
                  "streams/s | ratio | non-streaming req/s | ratio | errors |",
                  "|---|---:|---:|---:|---:|---:|"]
        for reactor, row in reactors.items():
            if "error" in row:
                lines.append(f"| `{reactor}` | unavailable: {row['error']} | | | | |")
                continue
            streams = row["unpaced_50"]
            ours = streams[reactor]["streams_per_s"]
            base = streams[report["reactor"]]["streams_per_s"]
            plain_row = row.get("non_streaming", {})
            req = plain_row.get(reactor, {}).get("requests_per_s")
            req_base = plain_row.get(report["reactor"], {}).get("requests_per_s")
            errors = streams[reactor]["errors"] + plain_row.get(reactor, {}).get("errors", 0)
            lines.append(f"| `{reactor}` | {fmt(ours)} | {fmt(ratio(ours, base))}× | "
                         f"{fmt(req)} | {fmt(ratio(req, req_base))}× | {errors} |")
    fast = r.get("fast_path")
    if fast:
        variants = list(fast["unpaced_50"])
        lines += ["", "| fast path (`LLAMASWAP_FAST_PATH`, same run, interleaved) | "
                  + " | ".join(f"`{v}`" for v in variants) + " |",
                  "|---|" + "---:|" * len(variants)]
        for key, label, metric in (
                ("unpaced_50", "unpaced 16 tokens, 50 streams: streams/s", "streams_per_s"),
                ("unpaced_50", "unpaced: proxy CPU ms per stream", "cpu_ms_per_unit"),
                ("non_streaming", "non-streaming (wrk): requests/s", "requests_per_s"),
                ("non_streaming", "non-streaming: proxy CPU ms per request",
                 "cpu_ms_per_unit")):
            if key in fast:
                lines.append(f"| {label} | "
                             + " | ".join(fmt(fast[key][v].get(metric)) for v in variants)
                             + " |")
    trees = r.get("trees")
    if trees:
        names_here = list(trees["trees"])
        lines += ["", "| checkouts side by side (" + ", ".join(
            f"{n}: `{p}`" for n, p in trees["trees"].items()) + ") | "
            + " | ".join(names_here) + " | " + " / ".join(reversed(names_here)) + " |",
            "|---|" + "---:|" * (len(names_here) + 1)]
        for key, label in (("paced_1", "paced 32×10 ms, 1 stream (cold path)"),
                           ("unpaced_1", "1-token streams back to back, 1 stream (warm path)"),
                           ("paced_50", "paced 32×10 ms, 50 streams"),
                           ("unpaced_50", "unpaced 16 tokens, 50 streams"),
                           ("unpaced_200", "unpaced 16 tokens, 200 streams"),
                           ("non_streaming", "non-streaming, 50 connections (wrk)")):
            if key not in trees:
                continue
            rows = trees[key]
            metrics = (("requests_per_s", "requests/s"), ("latency_p50_ms", "p50 ms"),
                       ("latency_p99_ms", "p99 ms"), ("cpu_ms_per_unit", "proxy CPU ms / req")
                       ) if key == "non_streaming" else (
                       ("streams_per_s", "streams/s"), ("ttfb_p50_ms", "TTFB p50 ms"),
                       ("gap_p99_ms", "gap p99 ms"), ("cpu_ms_per_unit", "proxy CPU ms / stream"))
            for metric, unit in metrics:
                if key.startswith("unpaced") and metric.startswith("gap"):
                    continue
                values = [rows[n].get(metric) for n in names_here]
                versus = ratio(values[-1], values[0]) if len(values) > 1 else None
                lines.append(f"| {label}: {unit} | " + " | ".join(fmt(v) for v in values)
                             + f" | {fmt(versus)} |")
            errors = [rows[n].get("errors") for n in names_here]
            if any(errors):
                lines.append(f"| {label}: errors | " + " | ".join(map(str, errors)) + " | |")
    floor = r.get("floor")
    if floor:
        names_here = list(floor["unpaced_50"])
        lines += ["", "| the floors: bare byte relays, no HTTP (`bench/floor.py`) | "
                  + " | ".join(names_here) + " |", "|---|" + "---:|" * len(names_here)]
        for key, label, metric in (
                ("unpaced_50", "unpaced 16 tokens, 50 streams: streams/s", "streams_per_s"),
                ("unpaced_50", "unpaced: proxy CPU ms per stream", "cpu_ms_per_unit"),
                ("non_streaming", "non-streaming (wrk): requests/s", "requests_per_s"),
                ("non_streaming", "non-streaming: proxy CPU ms per request",
                 "cpu_ms_per_unit")):
            if key in floor:
                lines.append(f"| {label} | "
                             + " | ".join(fmt(floor[key][n][metric]) for n in names_here) + " |")
    lines += ["", "| target | measured | limit | met |", "|---|---:|---:|:---:|"]
    for check in report["checks"]:
        met = {True: "yes", False: "**no**", None: "—"}[check["met"]]
        lines.append(f"| {check['target']} | {fmt(check['value'])} {check['unit']} | "
                     f"{fmt(check['limit'])} | {met} |")
    return "\n".join(lines) + "\n"


def compare(ours: float | None, ref: float | None, metric: str) -> str:
    if ours is None or ref is None:
        return "—"
    if metric.endswith("_per_s") or metric == "cpu_ms_per_unit":
        return f"{fmt(ratio(ours, ref))}×"
    return f"{ours - ref:+.2f} ms"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import twisted
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "twisted": twisted.__version__,
            "nginx": nginx_version(), "load_average": list(os.getloadavg())}


# -- main ----------------------------------------------------------------------------------


@contextlib.contextmanager
def environment(workdir: Path | None) -> Iterator[tuple[Path, Children]]:
    children = Children()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llsbench-")))
        try:
            yield workdir, children
        finally:
            children.stop_all()


SCENARIOS = ("upstream", "swap", "paced", "unpaced", "non_streaming", "memory", "reactors",
             "floor", "fast_path", "trees")


def run_suite(plan: Plan, mode: str, reactor: str, reactors: list[str], only: set[str],
              use_nginx: bool = True, log: Callable[[str], None] = print,
              fast_paths: list[str] | None = None,
              against: Path | None = None) -> dict[str, Any]:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 20000)), hard))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.monotonic()
    with environment(None) as (workdir, children):
        config = llamaswap_config(workdir, plan)
        llamaswap = start_llamaswap(children, workdir, config, reactor)
        idle_rss = rss_mb(llamaswap.proc.pid)
        elapsed, status = first_byte(llamaswap.port, post_request("bench"))  # starts the model
        if status != 200:
            raise RuntimeError(f"llamaswap answered {status} to the first request")
        _, proxy = running_pid(llamaswap, "bench")
        upstream_port = int(proxy.rsplit(":", 1)[1])
        nginx = start_nginx(children, workdir, upstream_port) if use_nginx else None
        targets = {"llamaswap": llamaswap.port}
        if nginx is not None:
            targets["nginx"] = nginx[1]
        else:
            log("nginx is not installed (apt-get install nginx): comparing with direct access")
        targets["direct"] = upstream_port
        run = Run(plan, workdir, children, targets, llamaswap,
                  nginx[0] if nginx else None, log=log)
        run.proxy_pids["llamaswap"] = lambda: [llamaswap.proc.pid]
        if nginx is not None:
            nginx_proc = nginx[0]
            run.proxy_pids["nginx"] = lambda: nginx_pids(nginx_proc)
        if "upstream" in only:
            scenario_upstream_alone(run, upstream_port)
        if "swap" in only:
            scenario_swap(run)
        if "paced" in only:
            scenario_streaming(run, "paced", plan.paced_concurrency, 32, 0.01)
        if "unpaced" in only:
            scenario_streaming(run, "unpaced", plan.unpaced_concurrency, 16, 0)
        if "non_streaming" in only:
            scenario_non_streaming(run)
        if "memory" in only:
            scenario_memory(run, idle_rss)
        if "reactors" in only and reactors:
            scenario_reactors(run, reactors)
        if "floor" in only:
            scenario_floor(run, upstream_port)
        if "fast_path" in only and fast_paths:
            scenario_fast_path(run, fast_paths)
        if "trees" in only and against is not None:
            scenario_trees(run, {"baseline": against, "candidate": REPO})
        reference = "nginx" if nginx is not None else "direct"
        report = {
            "version": 1, "started": started, "mode": mode, "reactor": reactor,
            "machine": machine(), "plan": plan.__dict__, "targets": list(targets),
            "reference": reference, "results": run.results,
            "checks": check_targets(run.results, reference),
            "runtime_s": round(time.monotonic() - t0, 1),
        }
    return report


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = report["started"].replace(":", "").replace("-", "")
    name = f"{stamp}-{report['mode']}"
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown(report))
    shutil.copyfile(json_path, out / "latest.json")
    shutil.copyfile(md_path, out / "latest.md")
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    size.add_argument("--tiny", action="store_true",
                      help="seconds: proves the harness works (used by the test-suite)")
    parser.add_argument("--reactor", default="default",
                        help="llamaswap's reactor for the main comparison (twistd --reactor)")
    parser.add_argument("--reactors", default="asyncio",
                        help="other reactors compared on throughput ('' for none)")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help="comma-separated subset of: " + ", ".join(SCENARIOS))
    parser.add_argument("--fast-paths", default="off request writes on",
                        help="space-separated LLAMASWAP_FAST_PATH values compared by the "
                        "fast_path scenario (a value may itself be a comma list of pieces)")
    parser.add_argument("--no-nginx", action="store_true", help="compare with direct only")
    parser.add_argument("--against", type=Path,
                        help="another checkout (e.g. a worktree of main): the trees scenario "
                        "runs its llamaswap beside this checkout's, interleaved")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    ns = parser.parse_args(argv)
    plan, mode = (QUICK, "quick") if ns.quick else (TINY, "tiny") if ns.tiny else (FULL, "full")
    only = {s.strip() for s in ns.only.split(",") if s.strip()}
    unknown = only - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    reactors = [r.strip() for r in ns.reactors.split(",") if r.strip()]

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    fast_paths = ns.fast_paths.split()
    if "trees" in only and ns.against is None and ns.only != parser.get_default("only"):
        parser.error("the trees scenario needs --against CHECKOUT")
    against = ns.against.resolve() if ns.against is not None else None
    report = run_suite(plan, mode, ns.reactor, reactors, only, not ns.no_nginx, log, fast_paths,
                       against)
    json_path, md_path = write_report(report, ns.out)
    print(markdown(report))
    print(f"written: {json_path} and {md_path} ({report['runtime_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
