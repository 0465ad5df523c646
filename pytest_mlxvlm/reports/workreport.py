"""The work profile in reports: the terminal's lines and the pull-request comment's table (pure)."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from ..results import CaseResult, WorkCheck

# How each verdict reads, in the terminal and in Markdown
WORDS = {"same": "same work", "added": "ADDED WORK", "removed": "less work", "views": "views only",
         "not comparable": "not comparable", "unavailable": "no profile", "new": "new (nothing to compare with yet)"}
MARKS = {"same": "✅", "added": "❌", "removed": "🚀", "views": "ℹ️", "not comparable": "⚪",
         "unavailable": "⚪", "new": "🆕"}


def _checked(results: Sequence[CaseResult]) -> list[tuple[CaseResult, WorkCheck]]:
    """Cases with a work check: single-sided ones, and the head of an A/B pair."""
    return [(r, r.work_check) for r in results if r.work_check is not None and r.side in ("", "head")]


def work_counts(results: Sequence[CaseResult]) -> Counter[str]:
    return Counter(check.verdict for _, check in _checked(results))


def work_lines(results: Sequence[CaseResult]) -> list[str]:
    """One count line, then a line per case whose work is not simply the same."""
    checked = _checked(results)
    if not checked:
        return []
    against = {check.against for _, check in checked}
    counts = work_counts(results)
    summary = ", ".join(f"{n} {WORDS[v]}" for v, n in sorted(counts.items(), key=lambda kv: kv[0] != "same"))
    lines = [f"mlxvlm work profile against the {' / '.join(sorted(against))} (exact): {summary}"]
    for result, check in checked:
        if check.verdict in ("same", "new") and not check.outputs_differ_at:
            continue  # a new case is counted above: one line per case would only repeat it
        name = result.case_key or result.test_id
        note = "" if check.gated or check.verdict != "added" else " (reported, --mlx-work report)"
        outputs = f"; {check.outputs}" if check.outputs and check.outputs_differ_at is not None else ""
        description = check.description.removeprefix("not comparable: ")  # the label says it already
        lines.append(f"  {WORDS[check.verdict]}: {name}: {description}{outputs}{note}")
    return lines


def work_markdown(results: Sequence[CaseResult]) -> list[str]:
    """The Markdown table of work verdicts (empty without work checks)."""
    checked = _checked(results)
    if not checked:
        return []
    against = " / ".join(sorted({check.against for _, check in checked}))
    lines = [f"### Work profile (exact, against the {against})", "",
             "| Case | Work | Outputs |", "|---|---|---|"]
    for result, check in checked:
        mark = MARKS[check.verdict] if check.gated or check.verdict != "added" else "⚠️"
        lines.append(f"| `{result.case_key or result.resolution}` | {mark} {WORDS[check.verdict]}"
                     f"{': ' + check.description if check.verdict != 'same' else ''} | {check.outputs or '–'} |")
    return [*lines, ""]
