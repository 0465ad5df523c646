"""History: one JSON line per session, appended under a lock, read back line by line."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .files import append_line
from .results import HISTORY_SCHEMA, METRICS, CaseResult


def git_state(directory: Path) -> dict[str, str | None]:
    """The commit and branch of ``directory`` (CI variables first, then git itself)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True,
                                 timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() or None if out.returncode == 0 else None

    return {
        "commit": os.environ.get("GITHUB_SHA") or git("rev-parse", "HEAD"),
        "branch": os.environ.get("GITHUB_REF_NAME") or git("rev-parse", "--abbrev-ref", "HEAD"),
    }


def session_record(
    results: Sequence[CaseResult],
    *,
    machine: dict[str, Any],
    settings: dict[str, Any],
    git: dict[str, str | None],
    when: datetime | None = None,
) -> dict[str, Any]:
    """Everything one session measured, as one history entry."""
    return {
        "schema_version": HISTORY_SCHEMA,
        "date": (when or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        **git,
        "machine": machine,
        "settings": settings,
        "cases": [
            {
                "model": r.model,
                "case_key": r.case_key,
                "resolution": r.resolution,
                "outcome": r.outcome,
                "medians": {m: r.summary(m).median for m in METRICS},
                "samples": {m: r.values(m) for m in METRICS},
            }
            for r in results
        ],
    }


def append(path: Path, record: dict[str, Any]) -> None:
    """Append one line under an exclusive lock, so concurrent jobs lose nothing."""
    append_line(path, json.dumps(record, sort_keys=True, separators=(",", ":")))


@dataclass
class History:
    """The usable entries of a history file and the lines that were not."""

    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read(path: Path) -> History:
    """Read every line; a corrupt line or unknown schema is reported and skipped, never rewritten."""
    history = History()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                history.problems.append(f"{path}:{number}: not JSON ({exc.msg}); skipped")
                continue
            if not isinstance(record, dict) or record.get("schema_version") != HISTORY_SCHEMA:
                version = record.get("schema_version") if isinstance(record, dict) else None
                history.problems.append(f"{path}:{number}: unknown schema_version {version!r}; skipped")
                continue
            if not isinstance(record.get("cases"), list) or "machine" not in record:
                history.problems.append(f"{path}:{number}: missing cases or machine; skipped")
                continue
            history.records.append(record)
    return history
