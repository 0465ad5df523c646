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

from ..common.files import append_lines
from ..common.validate import (
    InvalidInput,
    NotJSON,
    get,
    join,
    loads,
    lst,
    number,
    numbers,
    obj,
    schema_is,
    show,
    text,
)
from ..results import HISTORY_SCHEMA, METRICS, CaseResult


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

    github = os.environ.get("GITHUB_SERVER_URL"), os.environ.get("GITHUB_REPOSITORY")
    remote = f"{github[0]}/{github[1]}" if all(github) else git("remote", "get-url", "origin")
    return {
        "commit": os.environ.get("GITHUB_SHA") or git("rev-parse", "HEAD"),
        "branch": os.environ.get("GITHUB_REF_NAME") or git("rev-parse", "--abbrev-ref", "HEAD"),
        "repository": repository_url(remote),  # for the report's commit links
    }


def repository_url(remote: str | None) -> str | None:
    """A browsable https address of a repository from a git remote (ssh or https, with or
    without ``.git``), credentials dropped; None for anything else (a local path)."""
    if not remote:
        return None
    text = remote.strip()
    ssh = re.match(r"^(?:ssh://)?git@([^:/]+)[:/](.+?)(?:\.git)?/?$", text)
    if ssh:
        return f"https://{ssh.group(1)}/{ssh.group(2)}"
    web = re.match(r"^(https?)://(?:[^@/]*@)?([^/]+)/(.+?)(?:\.git)?/?$", text)
    if web:
        return f"{web.group(1)}://{web.group(2)}/{web.group(3)}"
    return None


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
                **({"work": r.work} if r.work is not None else {}),
            }
            for r in results
        ],
    }


def append(path: Path, record: dict[str, Any]) -> None:
    """Append one line under an exclusive lock, so concurrent jobs lose nothing; a failed append
    (a full disk) leaves the file as it was."""
    append_records(path, [record])


def canonical(value: Any) -> str:
    """The JSON text the history file holds for ``value`` (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def append_records(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append one line per record, all of them or none (see ``files.append_lines``)."""
    append_lines(path, [canonical(r) for r in records])


def not_in(path: Path, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records a history file does not hold yet: a record is there when the file has more
    lines equal to it than came before it among ``records`` (two equal sessions stay two)."""
    from collections import Counter

    held = Counter(canonical(r) for r in read(path).records) if path.exists() else Counter()
    seen: Counter[str] = Counter()
    new = []
    for record in records:
        line = canonical(record)
        seen[line] += 1
        if seen[line] > held[line]:
            new.append(record)
    return new


@dataclass
class History:
    """The usable entries of a history file and the lines that were not."""

    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read(path: Path) -> History:
    """Read every line; a corrupt line, one of the wrong shape or of an unknown schema is
    reported (file, line number and field) and skipped, never rewritten. StoreError for a file
    that is one JSON document (a ``--mlx-json`` report given by mistake), not lines."""
    history = History()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                history.records.append(check_record(loads(line)))
            except NotJSON as exc:
                if not history.records and not history.problems and _one_document(path):
                    raise StoreError(f"{path} is one JSON document (a --mlx-json report?), not a "
                                     "history: give the file --mlx-history writes, one JSON line "
                                     "per session") from None
                history.problems.append(f"{path}:{line_no}: not JSON ({exc.on_its_line()}); skipped")
            except InvalidInput as exc:
                history.problems.append(f"{path}:{line_no}: {exc}; skipped")
    return history


def _one_document(path: Path) -> bool:
    """Whether the whole file is one JSON object or list (read when its first line is not JSON)."""
    try:
        doc = loads(Path(path).read_text(encoding="utf-8", errors="replace"), nonfinite=True)
    except (InvalidInput, OSError):
        return False
    return isinstance(doc, (dict, list))


def check_record(record: Any) -> dict[str, Any]:
    """A history entry whose fields have the types the report reads; InvalidInput names the field."""
    record = obj(record, "")
    if not schema_is(record.get("schema_version"), HISTORY_SCHEMA):
        raise InvalidInput(f"unknown schema_version {show(record.get('schema_version'))}")
    machine = obj(get(record, "machine"), "machine")
    text(machine.get("key"), "machine.key", optional=True)
    if "date" in record:  # the report orders sessions by it
        text(record["date"], "date")
    for key in ("commit", "branch", "repository"):
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
        if case.get("work") is not None:
            work = obj(case["work"], join(where, "work"))
            obj(work.get("phases"), join(join(where, "work"), "phases"))
    return record
