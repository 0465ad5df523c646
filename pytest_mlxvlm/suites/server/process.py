"""A VLM server as a process: ``python -m mlx_vlm.server`` on a loopback port, ready once
``/health`` answers, its output in a log file whose tail explains a failed start or a death,
stopped on every path out (terminate, then kill; at interpreter exit too) and dying with this
process however it dies (started through ``common/lifeline.py``'s launcher). No pytest here."""

from __future__ import annotations

import atexit
import http.client
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ...common.lifeline import child_env, launcher_command
from ...measure.workers import close_log, end_process, exit_reason, log_tail, new_log

HOST = "127.0.0.1"
_LIVE: set[ServerProcess] = set()


class ServerError(RuntimeError):
    """A server that would not start, died, answered with an error, or did not answer."""


# -- which server ------------------------------------------------------------------------------

# the Python packages each server imports at start-up (checked before it is started)
SERVER_NEEDS = {"mlx_vlm": ("mlx_vlm", "fastapi", "uvicorn"),
                "vllm-mlx": ("vllm_mlx", "mlx_lm", "mlx_vlm", "fastapi", "uvicorn", "prometheus_client")}
SERVER_INSTALL = {"mlx_vlm": "pip install 'mlx-vlm[server]'", "vllm-mlx": "pip install vllm-mlx (with its dependencies)"}
# per kind: the server's environment; mlx_vlm.server's prefix cache (APC) is on only where asked
APC_ENV = {"APC_ENABLED": "1", "APC_DISK_ENABLED": "0"}


def missing_packages(kind: str, python: str = sys.executable) -> list[str]:
    """The packages ``kind``'s server needs that ``python`` cannot import (found, not imported)."""
    needs = SERVER_NEEDS[kind]
    if python == sys.executable:
        import importlib.util

        return [name for name in needs if importlib.util.find_spec(name) is None]
    probe = ("import importlib.util, sys; print(' '.join(n for n in sys.argv[1:] "
             "if importlib.util.find_spec(n) is None))")
    out = subprocess.run([python, "-c", probe, *needs], capture_output=True, text=True, timeout=60)
    return out.stdout.split()


def server_command(kind: str, python: str, model: str, port: int, extra: list[str]) -> list[str]:
    """The command line that serves ``model`` on 127.0.0.1:``port``."""
    if kind == "vllm-mlx":
        return [python, "-m", "vllm_mlx.cli", "serve", model, "--host", HOST, "--port", str(port),
                "--mllm", "--enable-metrics", *extra]
    return [python, "-m", "mlx_vlm.server", "--model", model, "--host", HOST, "--port", str(port), *extra]


def missing_module_hint(log_tail: str) -> str:
    """'; it needs the Python package X, which is not installed' when the log says so."""
    import re

    found = re.findall(r"No module named '([\w.]+)'", log_tail)
    return (f"; it needs the Python package {found[-1].split('.')[0]!r}, which is not installed"
            if found else "")


# -- the server process -----------------------------------------------------------------------

def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_taken(port: int, host: str = HOST) -> str | None:
    """Why ``port`` cannot be listened on (in use, not allowed), or None when it is free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


@dataclass(eq=False)
class ServerProcess:
    """One ``python -m mlx_vlm.server`` serving ``model`` on 127.0.0.1."""

    model: str  # the folder (or hub id) passed as --model
    port: int = 0  # 0: a free port
    timeout_s: float = 300.0  # to become ready
    extra_args: list[str] = field(default_factory=list)
    python: str = sys.executable
    log: Path | None = None
    command: list[str] | None = None  # replaces the default command (tests)
    kind: str = "mlx_vlm"  # a key of SERVER_NEEDS (settings.SERVER_KINDS)
    env: dict[str, str] = field(default_factory=dict)  # added to the server's environment
    log_dir: Path | None = None  # where the log goes when ``log`` is not given (a session's folder)
    failed: bool = False  # it would not start or it died: its log is kept
    _proc: subprocess.Popen[bytes] | None = None
    _log_fh: Any = None
    _own_log: bool = False  # made here in the temporary folder: removed after a clean stop

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def tail(self) -> str:
        """The last lines of the server's log, on one line."""
        return log_tail(self.log)

    def start(self) -> None:
        """Start the server, tied to this process, and wait until ``/health`` answers;
        ServerError if it does not."""
        if self.port:
            taken = port_taken(self.port)
            if taken:
                raise ServerError(f"cannot start the server on {HOST}:{self.port}: the port is not "
                                  f"free ({taken}); choose another with --mlx-server-port, or 0 "
                                  "for a free one")
        else:
            self.port = free_port()
        if self.log is None:
            self.log, self._own_log = new_log(self.log_dir, "mlxvlm-server-"), self.log_dir is None
        command = self.command or server_command(self.kind, self.python, self.model, self.port,
                                                 self.extra_args)
        command = [c.replace("{port}", str(self.port)) for c in command]
        self._log_fh = open(self.log, "ab")
        self._log_fh.write(f"$ {shlex.join(command)}\n".encode())
        self._log_fh.flush()
        try:
            self._proc = subprocess.Popen(
                launcher_command(command, self.python), stdin=subprocess.DEVNULL, stdout=self._log_fh,
                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **child_env()},
                start_new_session=True,  # Ctrl-C reaches pytest, which stops the server
            )
        except OSError as exc:
            self._log_fh.close()
            self.failed = True
            raise ServerError(f"could not start {command[0]}: {exc}") from None
        _LIVE.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.failed = True
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            code = self._proc.poll() if self._proc is not None else None
            if code is not None:
                tail = self.tail()
                raise ServerError(f"the server exited during start-up ({exit_reason(code)})"
                                  f"{missing_module_hint(tail)}; log {self.log}: {tail or '(empty)'}")
            if health(self.url, timeout_s=2.0) is not None:
                return
            if time.monotonic() > deadline:
                raise ServerError(f"the server did not become ready within {self.timeout_s:g} s "
                                  f"(no answer from {self.url}/health) and was stopped; "
                                  f"log {self.log}: {self.tail() or '(empty)'}")
            time.sleep(0.2)

    def death(self) -> str | None:
        """Why the server is gone (exit status, log tail), or None while it runs."""
        if self._proc is None:
            return "the server was stopped"
        code = self._proc.poll()
        if code is None:
            return None
        self.failed = True
        return f"the server exited ({exit_reason(code)}); log {self.log}: {self.tail() or '(empty)'}"

    def stop(self) -> None:
        """Terminate, then kill; close the log. Safe to call twice."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is not None:
            end_process(proc, term_s=5.0)
        self._log_fh = close_log(self._log_fh, self.log if self._own_log and not self.failed else None)


def stop_all() -> None:
    """Stop every server still running (session end, Ctrl-C, interpreter exit)."""
    for server in list(_LIVE):
        server.stop()


atexit.register(stop_all)


# -- HTTP ---------------------------------------------------------------------------------------

def _connection(url: str, timeout_s: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port
    except ValueError:  # out of range or not a number
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ServerError(f"bad server URL {url!r}: write http://HOST:PORT")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return cls(parts.hostname, port, timeout=timeout_s), parts.path.rstrip("/")


def get(url: str, path: str, timeout_s: float = 5.0) -> bytes | None:
    """The body of ``GET url/path``, or None when there is no 200 answer."""
    try:
        conn, prefix = _connection(url, timeout_s)
        try:
            conn.request("GET", prefix + path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return None
    return body if response.status == 200 else None


def health(url: str, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """``GET /health`` as JSON (``{}`` when it is not JSON), or None when there is no 200 answer."""
    body = get(url, "/health", timeout_s)
    if body is None:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


