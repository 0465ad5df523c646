"""What a killed session leaves behind, found and removed by the next one.

A folder a session makes for itself (a synthetic model being built, the A/B scratch folder
with its git worktree) is removed by the session on every way out it can see: an error,
Ctrl-C, the end. SIGKILL gives it none, so the folder carries its owner (the pid and the
machine), and the next session that makes one of its kind removes those whose owner is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

OWNER_FILE = ".mlxvlm-owner.json"
STALE_AFTER_S = 7 * 86400.0  # a folder of unknown or foreign owner this old is abandoned


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie, killed but not yet reaped by its
    parent, counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is the answer
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def owner() -> dict[str, Any]:
    """This process on this machine (since its last start)."""
    from .machine import host_id

    return {"pid": os.getpid(), "host": host_id(), "started": time.time()}


def write_owner(folder: Path, **extra: Any) -> None:
    """Mark ``folder`` as this process's (with ``extra``: what the clean-up needs to know)."""
    (Path(folder) / OWNER_FILE).write_text(json.dumps({**owner(), **extra}))


def read_owner(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(folder) / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def abandoned(info: dict[str, Any] | None, age_s: float) -> bool:
    """Whether a folder's owner is gone: a dead process of this machine, or (owner unknown,
    or another machine's) a folder untouched for STALE_AFTER_S."""
    if info is None or not isinstance(info.get("pid"), int):
        return age_s > STALE_AFTER_S
    from .machine import host_id

    if info.get("host") != host_id():
        return age_s > STALE_AFTER_S
    return not pid_alive(info["pid"])


def sweep(parent: Path, pattern: str, owner_of: Callable[[Path], dict[str, Any] | None] = read_owner,
          remove: Callable[[Path, dict[str, Any] | None], None] | None = None) -> list[Path]:
    """Remove the folders under ``parent`` matching ``pattern`` whose owner is gone (``remove``
    does more first, e.g. a git worktree); returns the folders removed. Never raises."""
    removed = []
    try:
        candidates = [p for p in Path(parent).glob(pattern) if p.is_dir() and not p.is_symlink()]
    except OSError:
        return removed
    now = time.time()
    for folder in candidates:
        try:
            info = owner_of(folder)
            if not abandoned(info, now - folder.stat().st_mtime):
                continue
            if remove is not None:
                remove(folder, info)
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue
        if not folder.exists():
            removed.append(folder)
    return removed
