"""Writing files safely: atomic replacement with the usual permissions, appends, locks, no litter."""

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pytest_mlxvlm.common import files
from pytest_mlxvlm.common.files import append_line, atomic_write_text, lock_path, locked, write_json


@pytest.fixture
def umask():
    """Set the process umask for one test, and put the caller's back."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_new_file_gets_the_permissions_the_umask_gives(tmp_path, umask, mask, mode):
    umask(mask)
    target = tmp_path / "new" / "out.json"  # folders are made as needed
    atomic_write_text(target, "x")
    assert target.read_text() == "x" and _mode(target) == mode
    with open(tmp_path / "plain", "w") as fh:  # as open() would
        fh.write("x")
    assert _mode(tmp_path / "plain") == mode


def test_an_existing_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "out.md"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and _mode(target) == 0o640


def test_a_directory_is_refused_and_left_alone(tmp_path):
    target = tmp_path / "out.json"
    target.mkdir()
    (target / "inside").write_text("kept")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        atomic_write_text(target, "x")
    assert target.is_dir() and (target / "inside").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_failed_replace_leaves_the_old_content_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_write_json_is_indented_with_a_final_newline(tmp_path):
    write_json(tmp_path / "d.json", {"b": 1, "a": [1, 2]})
    text = (tmp_path / "d.json").read_text()
    assert text == json.dumps({"b": 1, "a": [1, 2]}, indent=2) + "\n"


def test_append_line_adds_one_line_each_time(tmp_path):
    path = tmp_path / "sub" / "h.jsonl"
    append_line(path, "one")
    append_line(path, "two\n")  # a trailing newline is not doubled
    assert path.read_text() == "one\ntwo\n"


def test_append_line_starts_on_a_new_line_after_a_cut_line(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text('{"complete": 1}\n{"cut": ')  # a writer killed mid-line
    append_line(path, '{"next": 2}')
    assert path.read_text().splitlines() == ['{"complete": 1}', '{"cut": ', '{"next": 2}']


def test_append_line_to_an_empty_file(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text("")
    append_line(path, "first")
    assert path.read_text() == "first\n"


def test_no_lock_or_temp_file_is_left_beside_written_files(tmp_path):
    atomic_write_text(tmp_path / "a.md", "a")
    write_json(tmp_path / "b.json", {})
    append_line(tmp_path / "c.jsonl", "c")
    with locked(tmp_path / "d.json"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "b.json", "c.jsonl"]


def test_locks_live_in_the_temp_folder_one_per_file(tmp_path):
    a, b = lock_path(tmp_path / "a.json"), lock_path(tmp_path / "b.json")
    assert a != b and a.parent == b.parent and a.parent.is_dir()
    assert tmp_path not in a.parents
    assert lock_path(tmp_path / "x" / ".." / "a.json") == a  # the same file, however named


def test_locked_excludes_a_second_holder(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    monkeypatch.setattr(files, "LOCK_TIMEOUT_S", 0.2)
    from filelock import Timeout

    with locked(target):
        errors = []

        def second() -> None:
            try:
                with locked(target):
                    pass
            except Timeout as exc:
                errors.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert len(errors) == 1
    with locked(target):  # released
        pass


def test_a_temporary_left_by_a_killed_writer_is_removed_at_the_next_write(tmp_path):
    target = tmp_path / "baseline.json"
    target.write_text("old")
    stale = tmp_path / ".baseline.json.abc123.tmp"  # what SIGKILL mid-write leaves
    fresh = tmp_path / ".baseline.json.def456.tmp"  # another writer, still busy
    stale.write_text("partial")
    fresh.write_text("partial")
    old = os.path.getmtime(stale) - files.STALE_TMP_S - 60
    os.utime(stale, (old, old))
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert not stale.exists() and fresh.exists()


# -- an append is all or nothing --------------------------------------------------------------------

def test_an_append_that_fails_midway_is_undone(tmp_path, monkeypatch):
    """ENOSPC after part of the line reached the file (as a filling disk does): the file is
    truncated back to its old length, and the error goes on."""
    import errno

    path = tmp_path / "h.jsonl"
    path.write_text('{"session": 1}\n')
    before, target = path.read_bytes(), path.stat().st_ino
    real_write = os.write
    calls = []

    def disk_fills_up(fd: int, data: bytes) -> int:
        if os.fstat(fd).st_ino != target:  # any other file is written as usual
            return real_write(fd, data)
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data[: len(data) // 2])  # a short write: the disk is filling up

    monkeypatch.setattr(os, "write", disk_fills_up)
    with pytest.raises(OSError, match="No space left on device"):
        append_line(path, '{"session": 2, "padding": "' + "x" * 3000 + '"}')
    monkeypatch.undo()
    assert len(calls) == 2 and path.read_bytes() == before


FILE_SIZE_LIMIT = r"""
import resource, signal, sys
from pathlib import Path
from pytest_mlxvlm.common.files import append_lines
path = Path(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 100, resource.RLIM_INFINITY))
try:
    append_lines(path, ["x" * 60, "y" * 4000])
except OSError as exc:
    print(exc.strerror)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file size limit")
def test_an_append_cut_by_the_kernel_leaves_the_file_as_it_was(tmp_path):
    """A real short write: the process's file size limit (RLIMIT_FSIZE) stops the append after
    100 bytes, as a full disk would."""
    path = tmp_path / "h.jsonl"
    path.write_text('{"session": 1}\n' * 197)  # 2,955 bytes, as in the report of the fault
    before = path.read_bytes()
    out = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(path)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=60)
    assert out.stdout.strip() == "File too large", out.stderr
    assert path.read_bytes() == before
