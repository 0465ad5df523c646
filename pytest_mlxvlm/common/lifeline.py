"""Children that die with the session that started them, whatever kills it.

A measuring worker or a server started by the plugin holds the CPU or GPU and its memory; if
pytest is killed (SIGKILL, the out-of-memory killer, a closed terminal) nothing would stop it.
So each such child calls ``hold()`` first thing (a worker from its own start-up; a server
through this file run as a launcher, ``python lifeline.py -m mlx_vlm.server ...``):

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` through ctypes, set in the child itself
  (``preexec_fn`` is unsafe in a parent with threads): the kernel kills the child the moment
  its parent goes. The parent is checked once more after the call, in case it went before;
- everywhere (macOS has no prctl): a daemon thread that checks every ``POLL_S`` seconds that the
  parent is still the one that started it, and kills the child's process group when it is not.

The parent passes its pid in ``$PYTEST_MLXVLM_LIFELINE`` (``child_env()``). The kernel ties the
parent-death signal to the *thread* that started the child, so a child started from any other
thread than the main one (which may end long before the session does) relies on the watchdog.

Standard library only: the launcher runs as a script, without the package on the path.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

ENV = "PYTEST_MLXVLM_LIFELINE"  # "<parent pid>:pdeathsig" or "<parent pid>:watch"
POLL_S = 0.5  # how often the watchdog looks at the parent
PR_SET_PDEATHSIG = 1
LAUNCHER = os.path.abspath(__file__)  # ``python LAUNCHER -m module args...``


def child_env() -> dict[str, str]:
    """The variable that ties a child started now, from this thread, to this process."""
    mode = "pdeathsig" if threading.current_thread() is threading.main_thread() else "watch"
    return {ENV: f"{os.getpid()}:{mode}"}


def launcher_command(command: list[str], python: str) -> list[str]:
    """``command`` run through the launcher when it starts ``python`` (a script, ``-m`` or
    ``-c``); any other command is returned as it is."""
    if not command or command[0] != python or len(command) < 2:
        return list(command)
    return [python, LAUNCHER, *command[1:]]


def _parent_of(value: str) -> tuple[int, str] | None:
    pid, _, mode = value.partition(":")
    return (int(pid), mode) if pid.isdigit() else None


def set_parent_death_signal() -> bool:
    """Linux: the kernel sends SIGKILL to this process when its parent thread ends."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die() -> None:
    """Kill this process, and its process group when it leads one (its own children)."""
    try:
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def _watch(parent: int) -> None:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != parent:
            die()


def hold(value: str | None = None) -> bool:
    """Tie this process to the parent named in ``value`` (default: ``$PYTEST_MLXVLM_LIFELINE``,
    which is then removed so that grandchildren do not read it); False when none is named."""
    if value is None:
        value = os.environ.pop(ENV, "")
    found = _parent_of(value)
    if found is None:
        return False
    parent, mode = found
    if mode == "pdeathsig":
        set_parent_death_signal()
    if os.getppid() != parent:  # it went before we could tie ourselves to it
        die()
    threading.Thread(target=_watch, args=(parent,), name="mlxvlm-lifeline", daemon=True).start()
    return True


def launch(argv: list[str]) -> None:
    """Run ``argv`` (``-m module args``, ``-c code args`` or ``script args``) as ``python argv``
    would, tied to the parent. On Linux with the parent-death signal the process execs the
    command (the signal survives ``exec``); elsewhere it runs it here, beside the watchdog."""
    value = os.environ.pop(ENV, "")
    found = _parent_of(value)
    if found is not None and found[1] == "pdeathsig" and set_parent_death_signal():
        if os.getppid() != found[0]:
            die()
        os.execv(sys.executable, [sys.executable, *argv])
    hold(value)
    import runpy

    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        sys.path[0] = ""
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102
    else:
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    launch(sys.argv[1:])
