"""Work changes in a history: the commit at which a case's work profile changed (pure, exact).

Work counts do not drift, so no statistics are needed: walking each case's sessions in date
order, a profile that differs from the previous one marks the commit that changed the work.
A profile whose key differs (another mlx, another device) starts again without a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .work import NOT_COMPARABLE, SAME, compare_profiles, describe


@dataclass
class WorkChange:
    """One change of a case's work between two sessions of the history."""

    chip: str
    model: str
    case: str
    verdict: str  # "added", "removed", "views" or "not comparable"
    description: str
    commit: str | None  # the session whose work is new
    previous_commit: str | None
    date: str | None

    def line(self) -> str:
        what = {"added": "WORK ADDED", "removed": "work removed", "views": "views changed",
                NOT_COMPARABLE: "work not comparable"}.get(self.verdict, self.verdict)
        at = (self.commit or "?")[:10]
        before = (self.previous_commit or "?")[:10]
        return (f"{what} at commit {at} (after {before}{', ' + self.date if self.date else ''}): "
                f"{self.chip} {self.model} {self.case}: {self.description}")


def work_changes(records: Sequence[dict[str, Any]]) -> list[WorkChange]:
    """Every change of work in the history, per (chip, model, case), in date order."""
    last: dict[tuple[str, str, str], tuple[dict[str, Any], dict[str, Any]]] = {}
    changes: list[WorkChange] = []
    for record in sorted(records, key=lambda r: str(r.get("date") or "")):
        chip = str((record.get("machine") or {}).get("key") or "?")
        for case in record.get("cases") or []:
            work = case.get("work")
            if not isinstance(work, dict) or not isinstance(work.get("phases"), dict):
                continue
            key = (chip, str(case.get("model")), str(case.get("case_key") or case.get("resolution")))
            if key in last:
                previous, previous_record = last[key]
                try:
                    diff = compare_profiles(previous, work)
                except (TypeError, ValueError, KeyError):
                    continue  # a profile that does not read back: skipped, like a bad line
                if diff.verdict != SAME:
                    changes.append(WorkChange(*key, diff.verdict, describe(diff), record.get("commit"),
                                              previous_record.get("commit"), record.get("date")))
            last[key] = (work, record)
    return changes


def work_section(changes: Sequence[WorkChange]) -> list[str]:
    """The report's Markdown section: each change of work with its commit."""
    if not changes:
        return []
    return ["## Work profile changes (exact)", "", *[f"- {c.line()}" for c in changes], ""]


def new_work_regressions(changes: Sequence[WorkChange]) -> list[str]:
    """Series whose latest change added work (the nightly job's failure)."""
    latest: dict[tuple[str, str, str], WorkChange] = {}
    for change in changes:
        if change.verdict != NOT_COMPARABLE:
            latest[(change.chip, change.model, change.case)] = change
    return [c.line() for c in latest.values() if c.verdict == "added"]
