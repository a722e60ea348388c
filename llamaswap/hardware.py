"""The host's hardware as llama-swap's ``/api/hardware`` describes it (schema version 1).

Read once, on a thread, when the service starts: CPU and memory from ``/proc``, the OS from
``/etc/os-release``, and NVIDIA GPUs through NVML when the ``nvidia-ml-py`` package and a
driver are present (imported only then). Anything that cannot be read is ``null`` or an
empty list, never an error; only a host whose memory size cannot be read has no snapshot.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

from llamaswap.compat.gotypes import go_time
from llamaswap.logs import get_logger

log = get_logger()

SCHEMA_VERSION = 1
ReadText = Callable[[str], str | None]

_ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64",
                  "ppc64le": "ppc64le", "riscv64": "riscv64", "s390x": "s390x",
                  "armv7l": "armv7", "armv7": "armv7"}
_OS_FAMILIES = {"linux": "linux", "darwin": "macos", "windows": "windows",
                "freebsd": "freebsd"}
_CONTAINERS = {"docker": "Docker", "podman": "Podman", "lxc": "LXC",
               "systemd-nspawn": "systemd-nspawn", "containerd": "containerd"}


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def architecture(machine: str) -> dict[str, Any]:
    """``platform.machine()`` -> llama-swap's normalised name, the raw one beside it."""
    name = _ARCHITECTURES.get(machine.lower(), "other")
    return {"name": name, "raw_name": None if name == machine else machine}


def os_release(text: str | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def operating_system(system: str, release: dict[str, str], kernel: str) -> dict[str, Any]:
    family = _OS_FAMILIES.get(system.lower(), "other")
    out: dict[str, Any] = {"family": family, "name": release.get("ID") or None,
                           "version": release.get("VERSION_ID") or None,
                           "kernel": kernel or None}
    if family == "other":
        out["raw_family"] = system
    return out


def environment(kernel: str, container_marker: str | None, dockerenv: bool) -> dict[str, Any]:
    """WSL, a container, or ``unknown`` (telling bare metal from a VM needs privileges)."""
    if "microsoft" in kernel.lower() or "wsl" in kernel.lower():
        return {"kind": "wsl", "name": "WSL", "version": None}
    marker = (container_marker or "").strip().lower()
    if marker:
        return {"kind": "container", "name": _CONTAINERS.get(marker, marker), "version": None}
    if dockerenv:
        return {"kind": "container", "name": "Docker", "version": None}
    return {"kind": "unknown", "name": None, "version": None}


def cpu(cpuinfo: str | None, logical: int | None) -> dict[str, Any]:
    """Vendor, model, sockets and cores from ``/proc/cpuinfo``; logical threads given."""
    vendor = model = None
    sockets: set[str] = set()
    cores: set[tuple[str, str]] = set()
    for block in (cpuinfo or "").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        vendor = vendor or fields.get("vendor_id") or None
        model = model or fields.get("model name") or None
        if "physical id" in fields:
            sockets.add(fields["physical id"])
            if "core id" in fields:
                cores.add((fields["physical id"], fields["core id"]))
    physical = len(cores) or None
    if physical is not None and logical and physical > logical:
        physical = None
    return {"vendor": vendor, "model": model, "socket_count": len(sockets) or None,
            "physical_core_count": physical, "logical_thread_count": logical or None}


def memory_bytes(meminfo: str | None) -> int:
    for line in (meminfo or "").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return 0


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip() or None if value is not None else None


def nvml_accelerators(nvml: Any) -> list[dict[str, Any]]:
    """NVIDIA GPUs through an NVML binding (``pynvml``); ``[]`` if NVML cannot start."""
    try:
        nvml.nvmlInit()
    except Exception as e:
        log.debug("NVML not available: {error}", error=str(e))
        return []
    try:
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
        except Exception:
            driver = None
        found = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            try:
                capacity: int | None = int(nvml.nvmlDeviceGetMemoryInfo(handle).total)
            except Exception:
                capacity = None
            try:
                power: float | None = nvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000
            except Exception:
                power = None
            found.append({"index": index, "kind": "gpu", "vendor": "NVIDIA",
                          "model": _text(nvml.nvmlDeviceGetName(handle)),
                          "architecture": None,
                          "memory": {"kind": "dedicated", "capacity_bytes": capacity},
                          "driver": {"name": "nvidia", "version": driver},
                          "power_limit_watts": power})
        return found
    except Exception as e:
        log.warn("reading GPUs through NVML failed: {error}", error=str(e))
        return []
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def load_nvml() -> Any:
    """The ``pynvml`` module of ``nvidia-ml-py``, or ``None`` when it is not installed."""
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return pynvml


def detect(version: str, read: ReadText = read_text, nvml: Any = None,
           now: Callable[[], float] = time.time,
           cpu_count: Callable[[], int | None] = os.cpu_count) -> dict[str, Any] | None:
    """The ``HardwareSnapshot``; ``None`` when the memory size cannot be read. Blocking
    (files, NVML): run it on a thread."""
    capacity = memory_bytes(read("/proc/meminfo"))
    if capacity <= 0:
        return None
    kernel = platform.release()
    return {
        "schema_version": SCHEMA_VERSION,
        "captured_at": go_time(now()),
        "capture": {"scope": "inference_host", "method": "detected",
                    "detector": {"name": "llamaswap", "version": version}},
        "architecture": architecture(platform.machine()),
        "operating_system": operating_system(platform.system(),
                                             os_release(read("/etc/os-release")), kernel),
        "environment": environment(
            kernel, os.environ.get("container")
            or ("podman" if os.path.exists("/run/.containerenv") else None),
            os.path.exists("/.dockerenv")),
        "cpu": cpu(read("/proc/cpuinfo"), cpu_count()),
        "memory": {"capacity_bytes": capacity},
        "accelerators": nvml_accelerators(nvml) if nvml is not None else [],
    }
