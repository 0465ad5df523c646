"""Machine identity: a stable chip key, the backend and library versions."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

CHIP_ENV = "PYTEST_MLXVLM_CHIP"


def slug(text: str) -> str:
    """A file-name-safe lower-case key: ``Apple M4 Max`` -> ``apple-m4-max``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def _run(*cmd: str) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def backend() -> str:
    """``metal``, ``cuda`` or ``cpu``: where MLX's default device runs."""
    import mlx.core as mx

    if mx.default_device() == mx.cpu:
        return "cpu"
    if mx.metal.is_available():
        return "metal"
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        return "cuda"
    return "gpu"


def _apple_chip() -> tuple[str, int | None]:
    name = _run("sysctl", "-n", "machdep.cpu.brand_string") or platform.processor() or "Apple"
    mem = _run("sysctl", "-n", "hw.memsize")
    return name, (round(int(mem) / 2**30) if mem.isdigit() else None)


def _nvidia_chip() -> tuple[str, int | None]:
    line = _run("nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits")
    if not line:
        return "NVIDIA GPU", None
    name, _, mem = line.splitlines()[0].partition(",")
    mem = mem.strip()
    return name.strip(), (round(int(mem) / 1024) if mem.isdigit() else None)


def _cpu_chip() -> tuple[str, int]:
    name = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return name or platform.processor() or platform.machine(), os.cpu_count() or 1


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@cache
def detect() -> dict[str, Any]:
    """Identity of this machine as MLX sees it (cached for the process)."""
    where = backend()
    info: dict[str, Any] = {"backend": where}
    if where == "metal" or (sys.platform == "darwin" and platform.machine() == "arm64"):
        name, mem = _apple_chip()
        info.update(chip=name, memory_gb=mem, key=slug(f"{name} {mem}gb" if mem else name))
    elif where == "cuda":
        name, mem = _nvidia_chip()
        info.update(chip=name, memory_gb=mem, key=slug(name))
    else:
        name, cores = _cpu_chip()
        info.update(chip=name, cores=cores, key=slug(f"cpu {name} {cores}c"))
    info.update(
        os=platform.platform(),
        python=platform.python_version(),
        mlx=_version("mlx"),
        mlx_vlm=_version("mlx-vlm"),
        host=host_id(),
    )
    return info


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def host_id() -> str:
    """This machine since its last start, as a short hash of its name and (on Linux) its boot
    id: sessions of one chip on several machines (a CI matrix, fresh cloud machines that all
    share one host name) are told apart without naming the machine."""
    import hashlib

    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        boot = ""
    return hashlib.sha256(f"{platform.node()}{boot}".encode()).hexdigest()[:12]


def identity(chip_override: str | None = None) -> dict[str, Any]:
    """The machine identity, with the chip key overridden by option or ``$PYTEST_MLXVLM_CHIP``."""
    info = dict(detect())
    override = chip_override or os.environ.get(CHIP_ENV)
    if override:
        info["detected_key"] = info["key"]
        info["key"] = slug(override)
    return info


def available_memory_bytes() -> int | None:
    """Memory a generation may use here: the GPU's recommended working set on Apple silicon,
    the device memory MLX reports on CUDA, else the host's available RAM; None if unknown.
    See ``memory_is_free`` for which of them it is."""
    device = _device_memory()
    if device:
        return device
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if sys.platform == "darwin":
        text = _run("sysctl", "-n", "hw.memsize")  # (an Apple GPU answered above)
        return int(text) if text.isdigit() else None
    return None


def memory_is_free() -> bool:
    """Is ``available_memory_bytes`` what is free now (the host's available RAM), rather than a
    device's total (Apple's working set, CUDA's device memory), which copies already loaded use up?"""
    return _device_memory() is None


def _device_memory() -> int | None:
    """The memory MLX reports for its device: Apple's recommended working set, CUDA's device
    memory; None on the CPU backend (or without a usable MLX)."""
    try:
        import mlx.core as mx

        info = mx.device_info() if hasattr(mx, "device_info") else {}
    except Exception:  # noqa: BLE001 - no usable MLX: the caller falls back to the host
        info = {}
    for key in ("max_recommended_working_set_size", "memory_size", "total_memory"):
        if info.get(key):
            return int(info[key])
    return None

