"""docs/reference.md "Overhead" (docs/results/cpu/startup.txt): what the plugin adds to every pytest start.

What the plugin adds to every pytest start: ``pytest --help`` with and without it.

Runs ``python -m pytest --help`` in a fresh process, alternately with the plugin (loaded
through its entry point, as wherever it is installed) and with ``-p no:mlxvlm``, for
``--rounds`` rounds after one unmeasured pair (which warms the file cache), in an empty folder
so no conftest.py or ini file is loaded. Prints the wall and CPU time of each round (CPU time
is less disturbed by other work on the machine), the medians and their differences,
and which heavy libraries the plugin loaded (none is the aim). Another checkout (an older
commit, say) is measured by putting its folder first on the path.

    python -m benchmarks.startup --rounds 10 | tee docs/results/cpu/startup.txt
    PYTHONPATH=/path/to/other/checkout python -m benchmarks.startup
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

# Nothing of the package (nor benchmarks._common, which imports it) is imported here, so the
# script measures any checkout: PYTHONPATH=<other checkout> python -m benchmarks.startup

HEAVY = ("scipy", "numpy", "mlx", "mlx_vlm", "PIL", "matplotlib", "ruptures")
VARIANTS = {"with plugin": [], "-p no:mlxvlm": ["-p", "no:mlxvlm"]}


def heavy_imports(cwd: str) -> dict[str, list[str]]:
    """The heavy libraries (top-level names) loaded in a fresh process by importing the plugin,
    and by a whole ``pytest --help`` (options, hooks, configure) with it."""
    probes = {"import pytest_mlxvlm.plugin": "import pytest_mlxvlm.plugin",
              "pytest --help": "import contextlib, io, pytest\n"
                               "with contextlib.redirect_stdout(io.StringIO()): pytest.main(['--help'])"}
    found = {}
    for name, body in probes.items():
        code = (f"{body}\nimport json, sys\n"
                f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                             check=True)
        found[name] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def timed(args: list[str], cwd: str) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of ``python -m pytest --help ARGS`` in ``cwd``.

    CPU time is much less disturbed than wall time by other work on the machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "--help", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def describe() -> str:
    """The measured package's version and, in a git checkout, its commit."""
    code = ("import importlib.metadata as m, pathlib, subprocess, pytest_mlxvlm as p; "
            "r = subprocess.run(['git', 'describe', '--always', '--dirty'], capture_output=True, "
            "text=True, cwd=pathlib.Path(p.__file__).parent); "
            "print(m.version('pytest-mlxvlm'), r.stdout.strip() if r.returncode == 0 else '')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tempfile.gettempdir())  # not the current folder: a checkout's package
    version, _, commit = out.stdout.strip().partition(" ")
    return f"pytest-mlxvlm {version or '?'}" + (f" at {commit}" if commit else "")


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--rounds", type=int, default=10, help="measured pairs (default 10)")
    args = cli.parse_args()
    cwd = tempfile.mkdtemp(prefix="mlxvlm-startup-")
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for extra in VARIANTS.values():  # unmeasured: file cache, .pyc files
        timed(extra, cwd)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    order = list(VARIANTS.items())
    for i in range(args.rounds):  # interleaved, the order swapped every round
        for name, extra in order if i % 2 == 0 else order[::-1]:
            times[name].append(timed(extra, cwd))
    import pytest

    print(f"pytest --help, {describe()}, {args.rounds} interleaved rounds; Python "
          f"{platform.python_version()}, pytest {pytest.__version__}, {platform.machine()}, "
          f"{platform.system()}")
    for i, kind in enumerate(("wall", "CPU")):
        for name, values in times.items():
            print(f"{kind:>4} s, {name:>12}: " + " ".join(f"{v[i]:.3f}" for v in values))
    if load_before is not None:  # other work on the machine slows both alike, but adds noise
        print(f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, "
              f"{os.cpu_count()} CPUs")
    for i, kind in enumerate(("wall", "CPU")):
        with_plugin, without = (statistics.median(v[i] for v in vs) for vs in times.values())
        print(f"median {kind} time: with plugin {with_plugin:.3f} s, -p no:mlxvlm {without:.3f} s, "
              f"plugin adds {with_plugin - without:+.3f} s")
    for name, found in heavy_imports(cwd).items():
        print(f"heavy libraries loaded by {name}: " + (", ".join(found) or "none"))


if __name__ == "__main__":
    main()
