"""Children that die with their parent: real processes, killed with real signals.

A helper "session" process starts a worker or a server as the plugin does and prints its pid;
the test then SIGKILLs the helper (nothing of it can run on the way out) and checks that the
child is gone within 3 seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_mlxvlm.common import lifeline
from pytest_mlxvlm.common.leftovers import pid_alive

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")

GONE_WITHIN_S = 10.0  # a poll of 0.5 s and a kill; the rest is a loaded machine's scheduling


def gone_within(pid: int, seconds: float = GONE_WITHIN_S) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def run_session(tmp_path: Path, body: str) -> tuple[subprocess.Popen[str], int]:
    """A helper process running ``body`` (which prints the child's pid, then waits); returns it
    and the child's pid."""
    script = tmp_path / "session.py"
    script.write_text(textwrap.dedent(body))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip().isdigit(), f"the helper session printed {line!r}"
    return proc, int(line)


def kill_session(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()  # reaped: its children are orphans now


SERVER = """
    import sys, threading, time
    from pathlib import Path
    from pytest_mlxvlm.suites.server.process import ServerProcess
    server = ServerProcess(model="unused", timeout_s=30, log=Path("{log}"), command=[
        sys.executable, "-c", "import time\\nfrom http.server import *\\n"
        "class H(BaseHTTPRequestHandler):\\n"
        "    def do_GET(self):\\n        self.send_response(200); self.end_headers()\\n"
        "ThreadingHTTPServer(('127.0.0.1', {{port}}), H).serve_forever()"])
    if {from_thread}:  # started from a thread that ends at once: the watchdog alone holds it
        starter = threading.Thread(target=server.start)
        starter.start()
        starter.join()
    else:
        server.start()
    print(server.pid, flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("from_thread", [False, True], ids=["main-thread", "other-thread"])
def test_a_server_dies_with_a_killed_session(tmp_path, from_thread):
    proc, server = run_session(tmp_path, SERVER.format(log=tmp_path / "s.log", from_thread=from_thread))
    try:
        time.sleep(2 * lifeline.POLL_S)
        assert pid_alive(server), "the server died before its session"  # not with the thread
        kill_session(proc)
        assert gone_within(server), "the server outlived its SIGKILLed session"
    finally:
        if pid_alive(server):
            os.kill(server, signal.SIGKILL)
        if proc.poll() is None:
            kill_session(proc)


WORKER = """
    import sys, time
    from pathlib import Path
    from pytest_mlxvlm.measure.workers import WorkerProcess
    worker = WorkerProcess("head", sys.executable, [], log=Path("{log}"), timeout_s=60)
    worker.call({{"op": "hello"}})
    worker.send({{"op": "sleep", "seconds": 600}})  # a generation that hangs
    print(worker.pid, flush=True)
    time.sleep(120)
"""


def test_a_hung_worker_dies_with_a_killed_session(tmp_path):
    proc, worker = run_session(tmp_path, WORKER.format(log=tmp_path / "w.log"))
    try:
        kill_session(proc)
        assert gone_within(worker), "the worker outlived its SIGKILLed session"
    finally:
        if pid_alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_the_watchdog_alone_kills_an_orphan(tmp_path):
    # the parent-death signal is Linux's; the watchdog is what macOS has: test it alone
    child = tmp_path / "child.py"
    child.write_text("import time\nprint('ready', flush=True)\ntime.sleep(120)\n")
    proc, pid = run_session(tmp_path, f"""
        import os, subprocess, sys, time
        from pytest_mlxvlm.common import lifeline
        env = {{**os.environ, lifeline.ENV: f"{{os.getpid()}}:watch"}}
        child = subprocess.Popen([sys.executable, lifeline.LAUNCHER, {str(child)!r}], env=env,
                                 stdout=subprocess.PIPE, start_new_session=True)
        child.stdout.readline()
        print(child.pid, flush=True)
        time.sleep(120)
    """)
    try:
        kill_session(proc)
        assert gone_within(pid, GONE_WITHIN_S), "the watchdog did not stop the orphan"
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("mode", ["pdeathsig", "watch"])
def test_the_launcher_runs_a_module_as_python_m_would(tmp_path, mode):
    (tmp_path / "hello_mod.py").write_text(
        "import sys\nif __name__ == '__main__':\n    print('main', sys.argv[1:], flush=True)\n    sys.exit(3)\n")
    out = subprocess.run([sys.executable, lifeline.LAUNCHER, "-m", "hello_mod", "a", "--b"], cwd=tmp_path,
                         env={**os.environ, lifeline.ENV: f"{os.getpid()}:{mode}"},
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (3, "main ['a', '--b']\n"), out.stderr


def test_commands_of_other_programs_are_left_alone():
    assert lifeline.launcher_command(["git", "status"], sys.executable) == ["git", "status"]
    assert lifeline.launcher_command([sys.executable, "-m", "x"], sys.executable) == [
        sys.executable, lifeline.LAUNCHER, "-m", "x"]
    assert lifeline.hold("") is False and lifeline.hold("not-a-pid") is False
