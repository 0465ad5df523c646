"""Writing files safely: atomic replacement, appends that start on a new line, and locks.

Every file the plugin writes (baselines, history, JSON and Markdown reports, trend reports)
goes through here: readers see the old or the new content, never a part; concurrent writers
of one file take turns; written files get the permissions the umask gives, as ``open`` would.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

LOCK_TIMEOUT_S = 120.0


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def lock_path(path: Path) -> Path:
    """Where the lock of ``path`` lives: the temp folder, not beside the file (no litter)."""
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:24]
    folder = Path(tempfile.gettempdir()) / "pytest-mlxvlm-locks"
    if not folder.is_dir():
        folder.mkdir(exist_ok=True)
        try:
            folder.chmod(0o1777)  # shared by every user, like /tmp: one lock per data file
        except OSError:
            pass
    return folder / f"{digest}.lock"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` so that concurrent updates of it do not lose writes."""
    from filelock import FileLock

    with FileLock(str(lock_path(path)), timeout=LOCK_TIMEOUT_S, mode=0o666):
        yield


STALE_TMP_S = 600.0  # a temporary file this old was left by a writer that was killed


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of ``path`` left by a killed writer (SIGKILL mid-write)."""
    now = time.time()
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()
        except OSError:
            pass


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never a part."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``atomic_write_text`` for bytes (an image)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory")
    _remove_stale_temporaries(path)
    mode = path.stat().st_mode & 0o777 if path.exists() else _umask_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, document: dict[str, Any]) -> None:
    """A JSON document, indented, written atomically."""
    atomic_write_text(path, json.dumps(document, indent=2, sort_keys=False) + "\n")


def append_line(path: Path, line: str) -> None:
    """Append one line under the file's lock; see ``append_lines``."""
    append_lines(path, [line])


def append_lines(path: Path, lines: list[str]) -> None:
    """Append lines under the file's lock, all of them or none: on any error (a full disk, a
    file size limit, Ctrl-C) the file is truncated back to its old length before the error
    goes on. They start on a new line whatever the file's state (a writer killed mid-line,
    which nothing can undo, leaves its fragment on a line of its own)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(line.rstrip("\n").encode("utf-8") + b"\n" for line in lines)
    if not data:
        return
    with locked(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), _umask_mode())
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            try:
                written = 0
                while written < len(data):  # a write may be short (a disk filling up)
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except BaseException:
                _truncate(fd, size)
                raise
        finally:
            os.close(fd)


def _truncate(fd: int, size: int) -> None:
    """Back to ``size`` bytes (what an interrupted append added goes); best effort, since the
    caller is already failing with the reason that matters."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError:
        pass
