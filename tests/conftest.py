"""Shared fixtures of the repository's tests.

- ``fake``: a pytester whose conftest registers the exact fake engine (``--mlx-model fake:<name>``);
- ``noisy_engine``: the fake engine with 2% noise (``pytest.mark.usefixtures("noisy_engine")``);
- every test starts without the variables that steer the plugin or the fake engine
  (``FAKE_MLX_*``, ``PYTEST_MLXVLM_*`` but the cache, ``GITHUB_STEP_SUMMARY``); tests set them
  through ``monkeypatch`` only, so nothing leaks into the next test;
- ``session_killer``: start a pytest session in a subprocess, SIGKILL it once its measuring
  workers run, and check which of them survive;
- ``--simulate-mac``: run the whole suite as if on an Apple M4 Max with MLX 0.99.0 (the machine
  identity is replaced), to check that no test depends on this machine's backend or versions.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_mlxvlm.testing import CONFTEST

# Libraries the plugin imports lazily and whose objects outlive one in-process session, imported
# before any pytester snapshot of sys.modules. pytester restores sys.modules after each session,
# so one first imported inside a session vanished while objects of it lived on: psutil then failed
# with KeyError('psutil') when the module's PostgreSQL server stopped, and a re-imported psycopg
# raised errors that SQLAlchemy's dialect (of the first import) no longer wrapped, so an
# unreachable store's psycopg.OperationalError escaped the session (both seen in CI, by test order).
for _name in ("psutil", "psycopg", "sqlalchemy", "sqlalchemy.dialects.postgresql.psycopg"):
    try:
        importlib.import_module(_name)
    except ImportError:  # the dev extra's database drivers are optional where a test skips them
        pass

# The identity of a Mac, as machine.detect() reports it there.
MAC = {
    "backend": "metal",
    "chip": "Apple M4 Max",
    "memory_gb": 128,
    "key": "apple-m4-max-128gb",
    "os": "macOS-15.1-arm64-arm-64bit",
    "python": "3.12.7",
    "mlx": "0.99.0",
    "mlx_vlm": "0.7.10",
}

# Variables that change what the plugin or the fake engine does.
STEERING = ("GITHUB_STEP_SUMMARY", "GITHUB_SHA", "GITHUB_REF_NAME",
            # set in this suite's own xdist workers (./run.sh test runs -n 2): a pytester session run
            # in process would inherit them and look like an xdist worker to pytest-benchmark
            "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")
KEPT = ("PYTEST_MLXVLM_CACHE",)  # set once per test session, below


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--simulate-mac", action="store_true",
                     help="report the machine as an Apple M4 Max (metal) with mlx 0.99.0")


@pytest.fixture(scope="session", autouse=True)
def _synthetic_cache(tmp_path_factory: pytest.TempPathFactory):
    """Build synthetic models once per test session, away from the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTEST_MLXVLM_CACHE", str(tmp_path_factory.mktemp("mlxvlm-cache")))
        yield


@pytest.fixture(scope="session", autouse=True)
def _simulated_machine(pytestconfig: pytest.Config):
    """With --simulate-mac, every session in this process sees the Mac's identity."""
    if not pytestconfig.getoption("simulate_mac"):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pytest_mlxvlm.common.machine.detect", lambda: dict(MAC))
        yield


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No steering variable from the caller's shell or an earlier test reaches a test."""
    for name in list(os.environ):
        if name.startswith("FAKE_MLX_") or (name.startswith("PYTEST_MLXVLM_") and name not in KEPT):
            monkeypatch.delenv(name)
    for name in STEERING:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester whose sessions measure with the exact fake engine (``--mlx-model fake:a``)."""
    pytester.makeconftest(CONFTEST)
    return pytester


@pytest.fixture
def noisy_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake engine's samples vary by 2% (relative standard deviation), as real ones do."""
    monkeypatch.setenv("FAKE_MLX_NOISE", "0.02")


@pytest.fixture
def simulated_mac(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """This process reports itself as an Apple M4 Max with MLX 0.99.0."""
    monkeypatch.setattr("pytest_mlxvlm.common.machine.detect", lambda: dict(MAC))
    return dict(MAC)


@pytest.fixture
def http_server():
    """``url = http_server(handler_class)``: a local HTTP server in a thread, shut down after the test."""
    import threading
    from http.server import ThreadingHTTPServer

    servers = []

    def start(handler: Any) -> str:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


class SessionKiller:
    """``kill(args, cwd, workers)``: ``pytest ARGS`` in a subprocess, SIGKILLed (nothing of it
    runs on the way out) once ``workers`` measuring workers run under it; returns their pids
    (Linux: found through /proc) and keeps their working directories in ``cwd``.
    ``survivors(pids, within_s)``: those still alive then."""

    MARKER = b"pytest_mlxvlm.measure.worker"

    def __init__(self) -> None:
        self.started: list[int] = []
        self.cwd: dict[int, Path] = {}  # each worker's working directory, read before the kill

    @classmethod
    def workers_of(cls, pid: int) -> list[int]:
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent == pid and cls.MARKER in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except (OSError, ValueError, IndexError):
                continue
        return found

    def kill(self, args: list[str], cwd: Path, workers: int, settle_s: float = 1.0) -> list[int]:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while len(self.workers_of(proc.pid)) < workers and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
            pids = self.workers_of(proc.pid)
            self.started.extend(pids)
            assert len(pids) == workers, f"{len(pids)} of {workers} workers started"
            time.sleep(settle_s)  # into the hung generation
            for pid in pids:
                self.cwd[pid] = Path(os.readlink(f"/proc/{pid}/cwd"))
            return pids
        finally:
            proc.kill()
            proc.wait()  # reaped: its children are orphans now

    @staticmethod
    def survivors(pids: list[int], within_s: float) -> list[int]:
        from pytest_mlxvlm.common.leftovers import pid_alive

        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.05)
        return [p for p in pids if pid_alive(p)]


@pytest.fixture
def session_killer():
    """A ``SessionKiller``; whatever it found still running at the end is killed."""
    import signal

    killer = SessionKiller()
    yield killer
    for pid in killer.survivors(killer.started, 0):
        os.kill(pid, signal.SIGKILL)
