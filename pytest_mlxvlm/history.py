"""History: one JSON line per session, appended under a lock, read back line by line."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .files import append_line
from .results import HISTORY_SCHEMA, METRICS, CaseResult
from .validate import InvalidInput, NotJSON, get, join, lst, loads, number, numbers, obj, show, text


class StoreError(OSError):
    """A history store that cannot be reached, read or written; the message says which and why."""


def hide_password(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages and reports."""
    return re.sub(r"^([^:/]+://[^:/@]*):[^@]*@", r"\1:***@", url)


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
    """Read every line; a corrupt line, one of the wrong shape or of an unknown schema is
    reported (file, line number and field) and skipped, never rewritten."""
    history = History()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                history.records.append(check_record(loads(line)))
            except NotJSON as exc:
                history.problems.append(f"{path}:{line_no}: not JSON ({exc.reason}); skipped")
            except InvalidInput as exc:
                history.problems.append(f"{path}:{line_no}: {exc}; skipped")
    return history


def check_record(record: Any) -> dict[str, Any]:
    """A history entry whose fields have the types the report reads; InvalidInput names the field."""
    record = obj(record, "")
    if record.get("schema_version") != HISTORY_SCHEMA:
        raise InvalidInput(f"unknown schema_version {show(record.get('schema_version'))}")
    machine = obj(get(record, "machine"), "machine")
    text(machine.get("key"), "machine.key", optional=True)
    if "date" in record:  # the report orders sessions by it
        text(record["date"], "date")
    for key in ("commit", "branch"):
        text(record.get(key), key, optional=True)
    obj(record.get("settings"), "settings", optional=True)
    for i, case in enumerate(lst(get(record, "cases"), "cases")):
        where = join("cases", i)
        case = obj(case, where)
        text(get(case, "model", where), join(where, "model"))
        for key in ("case_key", "resolution", "outcome"):
            text(case.get(key), join(where, key), optional=True)
        if not (case.get("case_key") or case.get("resolution")):
            raise InvalidInput(f"{where}: missing field 'resolution'")
        medians = case["medians"] = obj(case.get("medians"), join(where, "medians"), optional=True)
        for metric, value in medians.items():
            number(value, join(join(where, "medians"), metric), optional=True)
        samples = obj(case.get("samples"), join(where, "samples"), optional=True)
        for metric, values in samples.items():
            numbers(values, join(join(where, "samples"), metric), nonempty=False)
    return record
