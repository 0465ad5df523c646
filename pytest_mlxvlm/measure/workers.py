"""Measuring workers seen from pytest: start, ask, time out, restart and always stop them.

One ``WorkerProcess`` is one ``python -m pytest_mlxvlm.measure.worker`` with its own interpreter and
import path (a base revision's worktree, another environment). Its stderr goes to a log file
whose tail explains a crash or a hang; every worker ever started is stopped at exit, and dies
with this process if it is killed (``common/lifeline.py``). A log made here in the temporary
folder (no ``log_dir``) is removed when the worker stops without having failed; one in
``log_dir`` (a session's) is the session's to keep or remove.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..common.lifeline import child_env
from ..common.validate import printable

_LIVE: set[WorkerProcess] = set()
LOG_TAIL = 1500  # characters of a worker's or server's log quoted in an error


class WorkerError(RuntimeError):
    """A worker that failed, crashed or hung; the message says which, why, and its last output."""


def exit_reason(code: int | None) -> str:
    """``killed by SIGSEGV`` or ``exit status 1``."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code > 128:
        try:
            return f"exit status {code} ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exit status {code}"


def _signal(proc: subprocess.Popen[Any], sig: int) -> None:
    """``sig`` to the process's group when it leads one (it and what it started, even after it
    has exited itself), else to the process while it runs."""
    try:
        os.killpg(proc.pid, sig)
        return
    except OSError:  # no such group (or it is empty): the process alone, if it runs
        pass
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except OSError:
            pass


def end_process(proc: subprocess.Popen[Any], *, grace_s: float = 0.0, term_s: float = 3.0,
                kill_s: float = 5.0) -> None:
    """Give a process told to quit ``grace_s`` to go, then terminate it, then kill it. A process
    started with ``start_new_session`` leads its own group: whatever it started is killed with
    it, also when it has already exited (a server that died during start-up leaves no helper)."""
    steps = ((None, grace_s), (signal.SIGTERM, term_s))
    for sig, wait in steps:
        if proc.poll() is not None:
            break
        if sig is not None:
            _signal(proc, sig)
        elif wait <= 0:
            continue
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    _signal(proc, signal.SIGKILL)  # it, if it still runs, and what is left of its group
    try:
        proc.wait(timeout=kill_s)
    except subprocess.TimeoutExpired:
        pass


def plugin_copy(directory: Path) -> Path:
    """A copy of this plugin's code, so that both sides measure with the same code whatever
    their own import path holds; returns the folder to put first on the path."""
    source = Path(__file__).parents[1]  # the package, pytest_mlxvlm
    target = directory / "measuring-code"
    shutil.copytree(source, target / source.name,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "builtin"))
    return target


@dataclass(eq=False)
class WorkerProcess:
    """One measuring worker; ``call`` sends a request and waits for its answer."""

    name: str  # "base" or "head"
    python: str
    path: list[str] = field(default_factory=list)  # put first on PYTHONPATH
    cwd: Path | None = None
    log: Path | None = None
    timeout_s: float = 600.0
    env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None  # where the log goes when ``log`` is not given (a session's folder)
    failed: bool = False  # it died, hung or could not start: its log is kept
    _proc: subprocess.Popen[str] | None = None
    _answers: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _log_fh: Any = None
    _own_log: bool = False  # made here in the temporary folder: removed after a clean stop

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the process (stdin: requests, stdout: answers, stderr: the log), tied to this
        one so that it dies with it."""
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1", **child_env()}
        env["PYTHONPATH"] = os.pathsep.join(self.path + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        if self.log is None:
            self.log, self._own_log = new_log(self.log_dir, f"mlxvlm-{self.name}-worker-"), self.log_dir is None
        self._log_fh = open(self.log, "ab")
        try:
            self._proc = subprocess.Popen(
                [self.python, "-m", "pytest_mlxvlm.measure.worker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self._log_fh, cwd=self.cwd, env=env, text=True,
                bufsize=1, start_new_session=True,  # Ctrl-C reaches pytest, which stops us
            )
        except OSError as exc:
            self._log_fh.close()
            self.failed = True
            raise WorkerError(f"{self.name} worker could not start {self.python}: {exc}") from None
        self._answers = queue.Queue()
        threading.Thread(target=self._read, args=(self._proc, self._answers), daemon=True).start()
        _LIVE.add(self)

    @staticmethod
    def _read(proc: subprocess.Popen[str], answers: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            answers.put(line)
        answers.put(None)

    def tail(self) -> str:
        """The last lines of the worker's log, on one line."""
        return log_tail(self.log)

    def call(self, message: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        """Send one request; raise WorkerError on an error answer, a crash or a time-out."""
        self.send(message)
        return self.receive(message.get("op"), timeout_s)

    def send(self, message: dict[str, Any]) -> None:
        """Send one request without waiting (``receive`` takes the answer)."""
        if not self.alive:
            self.start()
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died: the read in receive says how

    def receive(self, op: Any, timeout_s: float | None = None) -> dict[str, Any]:
        """The answer to the request sent last; raise WorkerError as ``call`` does."""
        assert self._proc is not None
        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            line = self._answers.get(timeout=limit)
        except queue.Empty:
            self.failed = True
            self.stop()
            raise WorkerError(f"{self.name} worker did not answer {op!r} within {limit:.0f} s "
                              f"and was stopped; last output: {self.tail() or '(none)'}") from None
        if line is None:
            code = self._proc.wait()
            self.failed = True
            self.stop()
            raise WorkerError(f"{self.name} worker died during {op!r} ({exit_reason(code)}); "
                              f"last output: {self.tail() or '(none)'}")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise WorkerError(f"{self.name} worker: {answer.get('error', 'failed')}")
        return answer

    def stop(self) -> None:
        """Quit politely, then terminate, then kill; close the log."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is not None and proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass
            end_process(proc, grace_s=2.0)
        elif proc is not None:  # it died (a crash): what it started goes with its group
            end_process(proc)
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
        self._log_fh = close_log(self._log_fh, self.log if self._own_log and not self.failed else None)


def new_log(log_dir: Path | None, prefix: str) -> Path:
    """A new empty log file for a process: in ``log_dir`` (made if need be), else in the
    temporary folder."""
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".log", dir=log_dir)
    os.close(fd)
    return Path(name)


def log_tail(log: Path | None) -> str:
    """The last lines of a process's log, on one line ("" when there is none)."""
    if log is None or not log.exists():
        return ""
    text = log.read_bytes()[-LOG_TAIL:].decode("utf-8", "replace").strip()
    line = " | ".join(part.strip() for part in text.splitlines() if part.strip())
    # escaped first, then cut from the front: the last lines are the ones that say what happened
    return printable(line, None)[-LOG_TAIL:]


def close_log(handle: Any, remove: Path | None) -> None:
    """Close a process's log and remove it (``remove``: a log of ours whose process did not fail);
    returns None, the handle's new value."""
    if handle is not None:
        handle.close()
    if remove is not None:
        remove.unlink(missing_ok=True)
    return None


def stop_all() -> None:
    """Stop every worker still running (session end, Ctrl-C, interpreter exit)."""
    for worker in list(_LIVE):
        worker.stop()


atexit.register(stop_all)
