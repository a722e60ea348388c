"""CPU, memory, load, network and GPU samples for ``/api/performance`` (llama-swap's perf
monitor).

A ``LoopingCall`` on the given clock takes a sample every ``every`` seconds into a ring that
holds an hour of them. System figures come from four small ``/proc`` files read on the
reactor (tens of microseconds); GPU figures come from NVML (``nvidia-ml-py``, imported only
when present), whose calls can take milliseconds, so they run on a thread, at most one at a
time. Shapes are llama-swap's ``SysStat`` and ``GpuStat``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from llamaswap.compat.gotypes import go_time
from llamaswap.hardware import ReadText, read_text
from llamaswap.logs import get_logger

log = get_logger()

DEFAULT_EVERY = 5.0
RING_SECONDS = 3600.0
_MB = 1024 * 1024

CpuTimes = list[tuple[int, int]]
"""Per core: (busy jiffies, total jiffies)."""


def parse_cpu_times(stat: str | None) -> CpuTimes:
    """``/proc/stat``'s ``cpuN`` lines -> per-core (busy, total) jiffies."""
    cores: CpuTimes = []
    for line in (stat or "").splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        numbers = [int(v) for v in line.split()[1:] if v.isdigit()]
        if len(numbers) < 4:
            continue
        idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)  # idle + iowait
        total = sum(numbers[:8])  # guest time is already counted in user
        cores.append((total - idle, total))
    return cores


def cpu_percent(before: CpuTimes, after: CpuTimes) -> list[float]:
    """Per-core utilisation between two readings (since boot for a core not in ``before``)."""
    result = []
    for index, (busy, total) in enumerate(after):
        old_busy, old_total = before[index] if index < len(before) else (0, 0)
        elapsed = total - old_total
        result.append(round(100.0 * (busy - old_busy) / elapsed, 2) if elapsed > 0 else 0.0)
    return result


def parse_meminfo(text: str | None) -> dict[str, int]:
    """``/proc/meminfo`` -> bytes by field name."""
    values: dict[str, int] = {}
    for line in (text or "").splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def parse_loadavg(text: str | None) -> tuple[float, float, float]:
    parts = (text or "").split()
    try:
        return float(parts[0]), float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        return 0.0, 0.0, 0.0


def parse_net_dev(text: str | None) -> list[dict[str, Any]]:
    """``/proc/net/dev`` -> llama-swap's ``NetIOStat`` per interface, loopback left out."""
    result = []
    for line in (text or "").splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        name = name.strip()
        if not sep or name == "lo" or len(fields) < 9:
            continue
        result.append({"name": name, "bytes_recv": int(fields[0]), "bytes_sent": int(fields[8])})
    return result


class SystemReader:
    """Takes ``SysStat`` samples; remembers the last CPU reading to compute utilisation."""

    def __init__(self, read: ReadText = read_text) -> None:
        self._read = read
        self._cpu: CpuTimes = []

    def sample(self, now: float) -> dict[str, Any]:
        cpu = parse_cpu_times(self._read("/proc/stat"))
        per_core, self._cpu = cpu_percent(self._cpu, cpu), cpu
        memory = parse_meminfo(self._read("/proc/meminfo"))
        total = memory.get("MemTotal", 0)
        available = memory.get("MemAvailable", memory.get("MemFree", 0))
        swap_total = memory.get("SwapTotal", 0)
        load1, load5, load15 = parse_loadavg(self._read("/proc/loadavg"))
        return {"timestamp": go_time(now), "cpu_util_per_core": per_core,
                "mem_total_mb": total // _MB, "mem_used_mb": (total - available) // _MB,
                "mem_free_mb": memory.get("MemFree", 0) // _MB,
                "swap_total_mb": swap_total // _MB,
                "swap_used_mb": (swap_total - memory.get("SwapFree", swap_total)) // _MB,
                "load_avg_1": load1, "load_avg_5": load5, "load_avg_15": load15,
                "net_io": parse_net_dev(self._read("/proc/net/dev"))}


def _nvml(call: Callable[..., Any], *args: Any, missing: Any = 0) -> Any:
    """One NVML query; ``missing`` where the GPU does not support it."""
    try:
        return call(*args)
    except Exception:
        return missing


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def nvml_gpu_stats(nvml: Any, now: float) -> list[dict[str, Any]]:
    """One ``GpuStat`` per NVIDIA GPU (blocking: call it on a thread, after ``nvmlInit``)."""
    stats = []
    for index in range(nvml.nvmlDeviceGetCount()):
        gpu = nvml.nvmlDeviceGetHandleByIndex(index)
        rates = _nvml(nvml.nvmlDeviceGetUtilizationRates, gpu, missing=None)
        memory = _nvml(nvml.nvmlDeviceGetMemoryInfo, gpu, missing=None)
        stats.append({
            "timestamp": go_time(now), "id": index,
            "name": _text(_nvml(nvml.nvmlDeviceGetName, gpu, missing="")),
            "uuid": _text(_nvml(nvml.nvmlDeviceGetUUID, gpu, missing="")),
            "temp_c": int(_nvml(nvml.nvmlDeviceGetTemperature, gpu,
                                nvml.NVML_TEMPERATURE_GPU)),
            "vram_temp_c": 0,
            "gpu_util_pct": float(rates.gpu) if rates is not None else 0.0,
            "mem_util_pct": float(rates.memory) if rates is not None else 0.0,
            "mem_used_mb": int(memory.used // _MB) if memory is not None else 0,
            "mem_total_mb": int(memory.total // _MB) if memory is not None else 0,
            "fan_speed_pct": float(_nvml(nvml.nvmlDeviceGetFanSpeed, gpu)),
            "power_draw_w": _nvml(nvml.nvmlDeviceGetPowerUsage, gpu) / 1000,
        })
    return stats


GpuSampler = Callable[[float], "Deferred[list[dict[str, Any]]]"]
"""Takes a GPU sample off the reactor; fires with its ``GpuStat`` list."""


class PerformanceMonitor:
    """The ring of samples behind ``/api/performance``; start and stop with the service."""

    def __init__(self, clock: Any, every: float = DEFAULT_EVERY,
                 system: SystemReader | None = None, gpus: GpuSampler | None = None) -> None:
        self.every = every
        self._clock = clock
        self._system = system or SystemReader()
        self._gpus = gpus
        self._gpu_busy = False
        capacity = max(1, int(RING_SECONDS / every))
        self._sys: deque[tuple[float, dict[str, Any]]] = deque(maxlen=capacity)
        self._gpu: deque[tuple[float, list[dict[str, Any]]]] = deque(maxlen=capacity)
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(self.every, now=True).addErrback(
                lambda f: log.failure("performance sampling stopped", f))

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _tick(self) -> None:
        now = self._clock.seconds()
        try:
            self._sys.append((now, self._system.sample(now)))
        except Exception:
            log.failure("reading system figures failed")
        if self._gpus is not None and not self._gpu_busy:
            self._gpu_busy = True
            self._gpus(now).addCallbacks(self._gpu_sampled, self._gpu_failed,
                                         callbackArgs=(now,)).addBoth(self._gpu_done)

    def _gpu_sampled(self, stats: list[dict[str, Any]], now: float) -> None:
        if stats:
            self._gpu.append((now, stats))

    def _gpu_failed(self, failure: Failure) -> None:
        log.warn("reading GPU figures failed: {error}", error=failure.getErrorMessage())

    def _gpu_done(self, _: object) -> None:
        self._gpu_busy = False

    def current(self, after: float | None = None) -> tuple[list[dict[str, Any]],
                                                           list[dict[str, Any]]]:
        """Samples (oldest first), those later than ``after`` (Unix seconds) if given."""
        since = float("-inf") if after is None else after
        return ([sample for taken, sample in self._sys if taken > since],
                [gpu for taken, sample in self._gpu if taken > since for gpu in sample])


class NVMLSampler:
    """GPU samples through NVML on the reactor's thread pool. NVML starts on the first
    sample's thread (it can take a while); if it cannot start (no driver), every sample is
    empty and it is not tried again."""

    def __init__(self, reactor: Any, nvml: Any) -> None:
        self._reactor = reactor
        self._nvml = nvml
        self._started: bool | None = None

    def __call__(self, now: float) -> Deferred[list[dict[str, Any]]]:
        from twisted.internet.threads import deferToThreadPool
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(),
                                 self._sample, now)

    def _sample(self, now: float) -> list[dict[str, Any]]:
        if self._started is None:
            try:
                self._nvml.nvmlInit()
                self._started = True
            except Exception as e:
                self._started = False
                log.info("GPU figures unavailable (NVML: {error})", error=str(e))
        return nvml_gpu_stats(self._nvml, now) if self._started else []


def nvml_sampler(reactor: Any) -> NVMLSampler | None:
    """GPU samples through NVML, or ``None`` without ``nvidia-ml-py``."""
    from llamaswap.hardware import load_nvml
    nvml = load_nvml()
    return NVMLSampler(reactor, nvml) if nvml is not None else None


def performance_settings(config: Any) -> tuple[bool, float]:
    """(enabled, every) from the config's ``performance`` section when it has one, read
    loosely (its parser lives with the config): on, every ``DEFAULT_EVERY`` seconds."""
    section = getattr(config, "performance", None)
    if isinstance(section, dict):
        disabled, every = section.get("disabled", False), section.get("every")
    else:
        disabled, every = getattr(section, "disabled", False), getattr(section, "every", None)
    if not isinstance(every, (int, float)) or isinstance(every, bool) or every <= 0:
        every = DEFAULT_EVERY
    return not disabled, float(every)
