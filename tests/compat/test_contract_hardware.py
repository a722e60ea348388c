"""``/api/hardware`` and ``/api/performance`` documents: llama-swap's ``HardwareSnapshot``,
``SysStat`` and ``GpuStat``, from files and an NVML binding that the tests provide."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from llamaswap.hardware import cpu, detect, environment, nvml_accelerators, operating_system
from llamaswap.performance import (
    PerformanceMonitor,
    SystemReader,
    cpu_percent,
    nvml_gpu_stats,
    parse_cpu_times,
)
from tests.compat import llama_swap_types as T

CPUINFO = "".join(
    f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon Test\n"
    f"physical id\t: {i // 4}\ncore id\t\t: {i % 4 // 2}\n\n" for i in range(8))
MEMINFO = ("MemTotal:       16384000 kB\nMemFree:         2048000 kB\n"
           "MemAvailable:    8192000 kB\nSwapTotal:       1024000 kB\n"
           "SwapFree:         512000 kB\n")
STAT_1 = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\n"
STAT_2 = "cpu  30 0 10 160 0 0 0 0 0 0\ncpu0 25 0 5 70 0 0 0 0 0 0\ncpu1 5 0 5 90 0 0 0 0 0 0\n"
NET_DEV = ("Inter-|   Receive\n face |bytes packets\n"
           "    lo:    5476 67 0 0 0 0 0 0 5476 67 0 0 0 0 0 0\n"
           "  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n")


def files(**extra: str) -> Any:
    table = {"/proc/cpuinfo": CPUINFO, "/proc/meminfo": MEMINFO, "/proc/stat": STAT_1,
             "/proc/loadavg": "0.50 0.25 0.10 1/100 42\n", "/proc/net/dev": NET_DEV,
             "/etc/os-release": 'ID=debian\nVERSION_ID="12"\n', **extra}
    return table.get


class FakeNVML:
    """Two GPUs; the second does not report fan speed or power (NVML raises)."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, fail_init: bool = False) -> None:
        self.fail_init = fail_init
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.54"

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, gpu: int) -> str:
        return f"NVIDIA Test {gpu}"

    def nvmlDeviceGetUUID(self, gpu: int) -> str:
        return f"GPU-{gpu}"

    def nvmlDeviceGetMemoryInfo(self, gpu: int) -> Any:
        return SimpleNamespace(total=24 * 1024**3, used=(gpu + 1) * 1024**3)

    def nvmlDeviceGetPowerManagementLimit(self, gpu: int) -> int:
        if gpu:
            raise RuntimeError("Not Supported")
        return 350_000

    def nvmlDeviceGetUtilizationRates(self, gpu: int) -> Any:
        return SimpleNamespace(gpu=87, memory=40)

    def nvmlDeviceGetTemperature(self, gpu: int, sensor: int) -> int:
        return 65

    def nvmlDeviceGetFanSpeed(self, gpu: int) -> int:
        if gpu:
            raise RuntimeError("Not Supported")
        return 55

    def nvmlDeviceGetPowerUsage(self, gpu: int) -> int:
        if gpu:
            raise RuntimeError("Not Supported")
        return 250_500


def test_a_host_without_gpus_is_a_hardware_snapshot_with_no_accelerators() -> None:
    snapshot = detect("1.0", read=files(), now=lambda: 0.0, cpu_count=lambda: 8)
    assert snapshot is not None
    T.assert_decodes(snapshot, T.HARDWARE_SNAPSHOT)
    assert snapshot["accelerators"] == []
    assert snapshot["cpu"]["logical_thread_count"] == 8
    assert snapshot["memory"]["capacity_bytes"] == 16384000 * 1024
    assert snapshot["cpu"]["vendor"] == "GenuineIntel"
    assert (snapshot["cpu"]["socket_count"], snapshot["cpu"]["physical_core_count"]) == (2, 4)
    assert snapshot["operating_system"]["name"] == "debian"


def test_gpus_come_from_nvml_and_a_missing_driver_is_no_error() -> None:
    nvml = FakeNVML()
    snapshot = detect("1.0", read=files(), nvml=nvml, now=lambda: 0.0)
    assert snapshot is not None
    T.assert_decodes(snapshot, T.HARDWARE_SNAPSHOT)
    first, second = snapshot["accelerators"]
    assert (first["model"], first["memory"]["capacity_bytes"], first["power_limit_watts"]) == (
        "NVIDIA Test 0", 24 * 1024**3, 350.0)
    assert first["driver"] == {"name": "nvidia", "version": "550.54"}
    assert second["power_limit_watts"] is None and nvml.shutdowns == 1
    assert nvml_accelerators(FakeNVML(fail_init=True)) == []


def test_no_snapshot_without_a_memory_size() -> None:
    assert detect("1.0", read=files(**{"/proc/meminfo": ""}), now=lambda: 0.0) is None


def test_cpu_os_and_environment_details() -> None:
    assert cpu(None, None) == {"vendor": None, "model": None, "socket_count": None,
                               "physical_core_count": None, "logical_thread_count": None}
    assert operating_system("Plan9", {}, "")["raw_family"] == "Plan9"
    assert environment("5.15.0-microsoft-standard-WSL2", None, False)["kind"] == "wsl"
    assert environment("6.1", "podman", False) == {"kind": "container", "name": "Podman",
                                                   "version": None}
    assert environment("6.1", None, False)["kind"] == "unknown"


def test_cpu_utilisation_is_measured_between_readings() -> None:
    before, after = parse_cpu_times(STAT_1), parse_cpu_times(STAT_2)
    # cpu0: 20 busy jiffies of 50; cpu1: none of 50
    assert cpu_percent(before, after) == [40.0, 0.0]


def test_system_samples_are_sys_stats() -> None:
    reader = SystemReader(files())
    sample = reader.sample(0.0)
    T.assert_decodes(sample, T.SYS_STAT)
    assert (sample["mem_total_mb"], sample["mem_used_mb"], sample["swap_used_mb"]) == (
        16000, 8000, 500)
    assert sample["net_io"] == [{"name": "eth0", "bytes_recv": 1000, "bytes_sent": 2000}]
    assert sample["load_avg_1"] == 0.5


def test_gpu_samples_are_gpu_stats() -> None:
    stats = nvml_gpu_stats(FakeNVML(), 0.0)
    T.assert_decodes(stats, T.ListOf(T.GPU_STAT))
    assert [(g["gpu_util_pct"], g["mem_used_mb"], g["fan_speed_pct"], g["power_draw_w"])
            for g in stats] == [(87.0, 1024, 55.0, 250.5), (87.0, 2048, 0.0, 0.0)]


def test_the_monitor_samples_on_its_clock_into_an_hour_long_ring() -> None:
    clock = Clock()
    clock.advance(1000)
    pending: list[Deferred[list[dict[str, Any]]]] = []

    def gpus(now: float) -> Deferred[list[dict[str, Any]]]:
        d: Deferred[list[dict[str, Any]]] = Deferred()
        pending.append(d)
        return d

    monitor = PerformanceMonitor(clock, every=600, system=SystemReader(files()), gpus=gpus)
    monitor.start()
    assert len(monitor.current()[0]) == 1 and len(pending) == 1
    clock.advance(600)  # the GPU read still runs: no second one is started
    assert len(monitor.current()[0]) == 2 and len(pending) == 1
    pending[0].callback(nvml_gpu_stats(FakeNVML(), 1000.0))
    assert len(monitor.current()[1]) == 2
    for _ in range(10):
        clock.advance(600)
    sys_stats, _ = monitor.current()
    assert len(sys_stats) == 6  # 3600 s / 600 s
    later, later_gpus = monitor.current(after=clock.seconds() - 601)
    assert len(later) == 2 and later_gpus == []
    monitor.stop()
    clock.advance(600)
    assert len(monitor.current()[0]) == 6 and not monitor.running


def test_a_failing_gpu_read_is_logged_and_sampling_goes_on() -> None:
    clock = Clock()
    calls: list[float] = []

    def gpus(now: float) -> Deferred[list[dict[str, Any]]]:
        calls.append(now)
        if len(calls) == 1:
            return Deferred.fromCoroutine(_raise())
        return succeed([])

    monitor = PerformanceMonitor(clock, every=5, system=SystemReader(files()), gpus=gpus)
    monitor.start()
    clock.advance(5)
    assert calls == [0.0, 5.0] and len(monitor.current()[0]) == 2
    monitor.stop()


async def _raise() -> list[dict[str, Any]]:
    raise RuntimeError("NVML went away")


def test_performance_settings_follow_the_config_section_when_there_is_one() -> None:
    from llamaswap.performance import DEFAULT_EVERY, performance_settings

    assert performance_settings(object()) == (True, DEFAULT_EVERY)
    assert performance_settings(SimpleNamespace(performance={"every": 15.0})) == (True, 15.0)
    assert performance_settings(SimpleNamespace(
        performance=SimpleNamespace(disabled=True, every=5.0))) == (False, 5.0)
    assert performance_settings(SimpleNamespace(performance={"every": "5s"})) == (
        True, DEFAULT_EVERY)
