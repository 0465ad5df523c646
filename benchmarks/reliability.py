"""Regenerates the "measured" table of docs/reliability.md: stalling servers, killed sessions, a full disk.

Each scenario runs a real pytest session of the checkout given by ``--plugin`` (default: this
one) in a subprocess, as a user would, and measures what the fault costs:

- ``keepalive``, ``stall``, ``stall-ping``, ``trickle``: the server suite against a local fake
  server that answers ``/health`` and then keeps each chat stream open: SSE comments ``: ping``
  every second and no token; two tokens, then silence; two tokens, then pings; one byte every
  5 s of a line that never ends.
  Measured: the session's time (pytest's own figure, from session start) and the command's
  wall time (with the interpreter's start-up) against ``--mlx-server-timeout`` (``--timeout``),
  stopped at ``--cap`` seconds if it has not ended by then;
- ``isolate-kill``, ``ab-kill``: ``kill -9`` of pytest ``--settle`` seconds after its (last)
  worker started, while a worker generates 2,500 tokens of ``synthetic:tiny`` (``--mlx-isolate``;
  A/B against ``HEAD`` of a scratch repository, in turns: the base generates, the head waits).
  Measured: seconds until every worker is gone, and the base worktrees left behind;
- ``full-disk``: a history append on a 64 KB tmpfs (root; else the file size limit) with less
  room left than the line needs. Measured: the file's size before and after, and whether it
  still reads without a problem.

Linux only (workers are found through /proc). Hold the timing lock:

    flock /tmp/timing.lock python -m benchmarks.reliability --out docs/results/cpu/reliability/branch.jsonl
    flock /tmp/timing.lock python -m benchmarks.reliability --plugin /path/to/main --cap 60 --out .../main.jsonl
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import append_jsonl, parser

ROOT = Path(__file__).resolve().parents[1]

FAKE_SERVER = r'''
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b'{"status": "healthy"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if MODE.startswith("stall"):
            for i in range(2):
                chunk = {"choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            if MODE == "stall":  # silence, the connection held open
                time.sleep(3600)
                return
        beat, every = (b"d", 5.0) if MODE == "trickle" else (b": ping\n\n", 1.0)
        try:
            while True:
                self.wfile.write(beat)
                self.wfile.flush()
                time.sleep(every)
        except OSError:
            return


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''

SERVER_ARGS = {  # the commands: -k generation (10 cases), and the 13 measured cases
    "keepalive": ["-k", "generation"],
    "stall": ["-k", "not server_cache"],
    "stall-ping": ["-k", "not server_cache"],
    "trickle": ["-k", "generation"],
}


def env_for(plugin: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(plugin), "PYTHONUNBUFFERED": "1"}


def run_code(code: str, *args: str, plugin: Path) -> subprocess.CompletedProcess[str]:
    """``python -c CODE ARGS`` with ``plugin``'s package (run from the temporary folder: ``-c``
    puts the working directory first on the path, ahead of PYTHONPATH)."""
    return subprocess.run([sys.executable, "-c", code, *args], env=env_for(plugin), capture_output=True,
                          text=True, cwd=tempfile.gettempdir())


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int, marker: bytes) -> list[int]:
    """Processes whose parent is ``pid`` and whose command line holds ``marker``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid and marker in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def server_scenario(mode: str, plugin: Path, timeout: float, cap: float) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", FAKE_SERVER, str(port), mode])
    work = Path(tempfile.mkdtemp(prefix="mlxvlm-reliability-"))
    try:
        time.sleep(0.5)
        command = [sys.executable, "-m", "pytest", "--noconftest", "-p", "no:cacheprovider", "-q",
                   "--mlx-suite", "server", "--mlx-server-url", f"http://127.0.0.1:{port}",
                   "--mlx-server-timeout", f"{timeout:g}", *SERVER_ARGS[mode]]
        start = time.monotonic()
        session = subprocess.Popen(command, cwd=work, env=env_for(plugin), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = session.communicate(timeout=cap)
            ended = True
        except subprocess.TimeoutExpired:
            session.kill()
            out, _ = session.communicate()
            ended = False
        wall = time.monotonic() - start
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    summary = next((line.strip("= ") for line in reversed(out.splitlines()) if re.search(r" in [\d.]+s", line)), "")
    found = re.search(r" in ([\d.]+)s", summary)
    session = float(found.group(1)) if found and ended else None
    return {"scenario": mode, "timeout_s": timeout, "ended": ended, "session_s": session, "wall_s": round(wall, 2),
            "session_within_2x_timeout": session is not None and session <= 2 * timeout,
            "wall_within_2x_timeout": ended and wall <= 2 * timeout, "pytest_summary": summary,
            "command": " ".join(command[2:])}


def kill_scenario(kind: str, plugin: Path, settle: float, cap: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="mlxvlm-reliability-"))
    args = ["--noconftest", "-p", "no:cacheprovider", "--mlx-model", "synthetic:tiny", "--mlx-resolutions",
            "224x224", "--mlx-max-tokens", "2500", "--mlx-warmup", "0"]
    if kind == "isolate-kill":
        args += ["--mlx-isolate"]
        workers_expected = 1
    else:
        (work / "README").write_text("a scratch repository for the A/B mode\n")
        git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "README"], check=True)
        subprocess.run([*git, "commit", "-qm", "base"], check=True)
        args += ["--mlx-ab-base", "HEAD", "--mlx-ab-pairs", "2:2"]
        workers_expected = 2
    session = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=work, env=env_for(plugin),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = b"pytest_mlxvlm.measure.worker"
    deadline = time.monotonic() + 300
    while len(children(session.pid, marker)) < workers_expected and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = children(session.pid, marker)
    time.sleep(settle)  # the workers load the model and start generating
    session.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    session.wait()
    gone: dict[int, float | None] = dict.fromkeys(workers)
    while time.monotonic() - killed < cap and any(gone[p] is None for p in workers):
        for pid in workers:
            if gone[pid] is None and not alive(pid):
                gone[pid] = time.monotonic() - killed
        time.sleep(0.02)
    for pid in workers:  # what outlived the cap
        if gone[pid] is None:
            os.kill(pid, signal.SIGKILL)
    row: dict[str, Any] = {
        "scenario": kind, "workers": len(workers), "settle_s": settle,
        "worker_gone_s": [None if s is None else round(s, 2) for s in gone.values()],
        "all_gone_within_3s": all(s is not None and s <= 3 for s in gone.values()),
    }
    if kind == "ab-kill":
        listed = subprocess.run(["git", "-C", str(work), "worktree", "list"], capture_output=True, text=True)
        row["worktrees_left"] = listed.stdout.count("\n") - 1
        sweep = ("from pytest_mlxvlm.gate.abmode import sweep_stale_scratch as s; print(len(s()))")
        swept = run_code(sweep, plugin=plugin)
        listed = subprocess.run(["git", "-C", str(work), "worktree", "list"], capture_output=True, text=True)
        row["next_run_sweep"] = swept.stdout.strip() if swept.returncode == 0 else "no clean-up in this checkout"
        row["worktrees_left_after_next_run"] = listed.stdout.count("\n") - 1
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run(["git", "-C", str(work), "worktree", "prune"], capture_output=True)
    return row


APPEND = r"""
import json, resource, signal, sys
from pathlib import Path
from pytest_mlxvlm.reports.store import open_store
if sys.argv[2] != "tmpfs":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (Path(sys.argv[1]).stat().st_size + 1136, resource.RLIM_INFINITY))
record = {"schema_version": 1, "machine": {}, "cases": [], "padding": "x" * 3000}
try:
    open_store(sys.argv[1]).append(record)
    print("written")
except OSError as exc:
    print(f"history not written: {type(exc).__name__}: {exc}")
"""


def full_disk_scenario(plugin: Path) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="mlxvlm-reliability-"))
    how = "file size limit"
    if os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                                            capture_output=True).returncode == 0:
        how = "tmpfs"
    try:
        history = folder / "history.jsonl"
        line = json.dumps({"schema_version": 1, "machine": {}, "cases": [], "i": 0}) + "\n"
        history.write_text(line * (2960 // len(line)))
        if how == "tmpfs":  # fill the rest of the disk, leaving the history's last page
            try:
                with open(folder / "filler", "wb") as fh:
                    while True:
                        fh.write(b"\0" * 1024)
                        fh.flush()
            except OSError:
                pass
        before = history.stat().st_size
        out = run_code(APPEND, str(history), "tmpfs" if how == "tmpfs" else "limit", plugin=plugin)
        after = history.stat().st_size
        check = ("import sys; from pytest_mlxvlm.reports.history import read; "
                 "print(len(read(sys.argv[1]).problems))")
        problems = run_code(check, str(history), plugin=plugin).stdout.strip()
    finally:
        if how == "tmpfs":
            subprocess.run(["umount", str(folder)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
    return {"scenario": "full-disk", "how": how, "bytes_before": before, "bytes_after": after,
            "message": out.stdout.strip() or out.stderr.strip()[-200:], "lines_skipped_when_read": problems}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--plugin", type=Path, default=ROOT, help="the checkout to run (default: this one)")
    cli.add_argument("--timeout", type=float, default=10.0, help="--mlx-server-timeout of the server scenarios")
    cli.add_argument("--cap", type=float, default=300.0, help="seconds after which a scenario is stopped")
    cli.add_argument("--settle", type=float, default=15.0,
                     help="seconds from the last worker's start to the kill (it loads, then generates)")
    cli.add_argument("--only", nargs="*", default=None, help="scenarios to run (default: all)")
    cli.add_argument("--out", type=Path, default=None, help="append one JSON line per scenario here")
    args = cli.parse_args()
    if not Path("/proc/self/stat").exists():
        raise SystemExit("benchmarks.reliability: Linux only (workers are found through /proc)")
    scenarios = args.only or [*SERVER_ARGS, "isolate-kill", "ab-kill", "full-disk"]
    print(f"checkout {args.plugin}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    for name in scenarios:
        if name in SERVER_ARGS:
            row = server_scenario(name, args.plugin, args.timeout, args.cap)
        elif name in ("isolate-kill", "ab-kill"):
            row = kill_scenario(name, args.plugin, args.settle, args.cap)
        else:
            row = full_disk_scenario(args.plugin)
        row["checkout"] = str(args.plugin)
        print(json.dumps(row), flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            append_jsonl(args.out, row)


if __name__ == "__main__":
    main()
