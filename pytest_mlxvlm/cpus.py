"""Pinning the measuring process to chosen CPUs (Linux), for steadier launch-bound timings."""

from __future__ import annotations

import os
from pathlib import Path


class CpuError(ValueError):
    """A CPU list that cannot be used here; the message says what to do."""


def parse_cpu_list(text: str) -> frozenset[int]:
    """``"2-5,8"`` -> ``{2, 3, 4, 5, 8}`` (the notation of ``taskset -c`` and ``lscpu``)."""
    cpus: set[int] = set()
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        first, sep, last = part.partition("-")
        try:
            lo, hi = int(first), int(last) if sep else int(first)
        except ValueError:
            raise CpuError(f"bad CPU list {text!r}: write CPU numbers and ranges, e.g. 2-5,8") from None
        if lo < 0 or hi < lo:
            raise CpuError(f"bad CPU list {text!r}: {part!r} is not a range of CPU numbers")
        cpus.update(range(lo, hi + 1))
    if not cpus:
        raise CpuError(f"bad CPU list {text!r}: it names no CPU")
    return frozenset(cpus)


def format_cpu_list(cpus: set[int] | frozenset[int]) -> str:
    """The short form of a CPU set: ``{2, 3, 4, 8}`` -> ``"2-4,8"``."""
    out: list[str] = []
    for cpu in sorted(cpus):
        if out and cpu == int(out[-1].rpartition("-")[2]) + 1:
            out[-1] = f"{out[-1].partition('-')[0]}-{cpu}"
        else:
            out.append(str(cpu))
    return ",".join(out)


def allowed() -> frozenset[int]:
    """The CPUs this process may run on now."""
    if not hasattr(os, "sched_getaffinity"):
        return frozenset(range(os.cpu_count() or 1))
    return frozenset(os.sched_getaffinity(0))


def pin(cpus: frozenset[int]) -> None:
    """Run every thread of this process (and the threads it starts later) on ``cpus`` only."""
    if not hasattr(os, "sched_setaffinity"):
        raise CpuError("CPU pinning needs Linux (sched_setaffinity); macOS has no CPU affinity, "
                       "leave --mlx-cpus unset there")
    online = frozenset(range(os.cpu_count() or 1))
    if not cpus <= online:
        raise CpuError(f"CPUs {format_cpu_list(cpus - online)} do not exist here "
                       f"(this machine has {format_cpu_list(online)})")
    tasks = Path("/proc/self/task")
    threads = [int(t) for t in os.listdir(tasks)] if tasks.is_dir() else [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass
        except OSError as exc:
            raise CpuError(f"cannot pin to CPUs {format_cpu_list(cpus)}: {exc.strerror} "
                           "(a container or cgroup may allow fewer CPUs)") from None


def topology(cpus: frozenset[int] | None = None) -> dict[int, tuple[int, int]]:
    """CPU -> (package, core) from sysfs; CPUs sharing a core are hyperthread siblings."""
    out: dict[int, tuple[int, int]] = {}
    for cpu in sorted(allowed() if cpus is None else cpus):
        base = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = int((base / "physical_package_id").read_text())
            core = int((base / "core_id").read_text())
        except (OSError, ValueError):
            package, core = 0, cpu
        out[cpu] = (package, core)
    return out
