"""What a killed session leaves: folders that name their owner, removed once the owner is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_mlxvlm.common import leftovers
from pytest_mlxvlm.common.machine import host_id


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_process_is_alive_until_it_exits(dead_pid):
    assert leftovers.pid_alive(os.getpid())
    assert not leftovers.pid_alive(dead_pid) and not leftovers.pid_alive(0)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="tells a zombie through /proc")
def test_a_killed_process_not_yet_reaped_counts_as_gone():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc.kill()
        deadline = time.monotonic() + 10
        while "Z" not in Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[:1]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not leftovers.pid_alive(proc.pid)  # a zombie: os.kill(pid, 0) still succeeds
    finally:
        proc.wait()


def test_which_owners_are_gone(dead_pid):
    here = host_id()
    assert leftovers.abandoned({"pid": dead_pid, "host": here}, age_s=0)
    assert not leftovers.abandoned({"pid": os.getpid(), "host": here}, age_s=10**9)
    week = leftovers.STALE_AFTER_S
    for info in (None, {"pid": dead_pid, "host": "another-machine"}, {"pid": "x"}):
        assert not leftovers.abandoned(info, age_s=week - 60)  # it may still be in use there
        assert leftovers.abandoned(info, age_s=week + 60)


def test_sweep_removes_the_folders_of_dead_owners_only(tmp_path, dead_pid):
    dead, live, foreign = (tmp_path / f"scratch-{n}" for n in ("dead", "live", "foreign"))
    for folder in (dead, live, foreign):
        folder.mkdir()
        (folder / "data").write_text("x")
    leftovers.write_owner(live, repo="/somewhere")
    (dead / leftovers.OWNER_FILE).write_text(f'{{"pid": {dead_pid}, "host": "{host_id()}", "repo": "/r"}}')
    (foreign / leftovers.OWNER_FILE).write_text(f'{{"pid": {dead_pid}, "host": "elsewhere"}}')
    (tmp_path / "scratch-file").write_text("not a folder")
    seen = []
    removed = leftovers.sweep(tmp_path, "scratch-*", remove=lambda folder, owner: seen.append((folder, owner["repo"])))
    assert removed == [dead] and seen == [(dead, "/r")]
    assert not dead.exists() and live.exists() and foreign.exists()
    assert leftovers.read_owner(live)["repo"] == "/somewhere"
