"""Reports of paired A/B runs: base and head side by side, each change with its interval and
tolerance, each case named by its test; an inconclusive case is its own outcome."""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..results import METRICS, CaseComparison, CaseResult
from .report import by_model, gate_summary, render_table

MARK = {"regressed": "❌ regressed", "improved": "🟢 improved", "ok": "✅ ok",
        "inconclusive": "⚪ inconclusive", "workload changed": "⚠️ workload changed"}
AB_COUNTS = ("compared", "regressed", "inconclusive")  # always in an A/B summary line


def _value(metric: str, value: float) -> str:
    unit = METRICS[metric].unit
    if unit == "s":
        return f"{value * 1000:.0f} ms"
    if unit == "GB":
        return f"{value:.2f} GB"
    return f"{value:.1f} {unit}"


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%" if math.isfinite(x) else "n/a"


def estimator(results: Sequence[CaseResult]) -> str | None:
    """``fast`` when the Base and Head columns are each side's fast end, ``median`` when they
    are medians, None when no metric was compared (only changed workloads)."""
    methods = {m.method for r in results for m in (r.comparison.metrics if r.comparison else [])}
    if not methods:
        return None
    return "fast" if any(m.startswith("fast end") for m in methods) else "median"


def columns(kind: str | None) -> tuple[str, ...]:
    """The A/B table's header; the Base and Head columns say which estimator they hold."""
    value = {"fast": " (fast end)", "median": " (median)"}.get(kind or "", "")
    return ("Test", "Metric", f"Base{value}", f"Head{value}", "Change [interval]", "Tolerance",
            "p", "Pairs", "Verdict")


def case_label(result: CaseResult) -> str:
    """The test and its parameters without the model (``test_image_generation[224x224]``),
    or the resolution when the case has no key."""
    return result.case_key.partition("::")[2] or result.case_key or result.resolution


def ab_rows(results: Sequence[CaseResult], marks: dict[str, str] | None = None) -> list[list[str]]:
    """One row per head case and gated metric; a changed workload is one row per change."""
    rows = []
    for r in results:
        c = r.comparison
        if r.side != "head" or c is None:
            continue
        case = case_label(r)
        if c.status == "workload-changed":
            verdict = (marks or {}).get("workload changed", "workload changed")
            for name, (before, after) in c.workload_changes.items():
                rows.append([case, name, str(before), str(after), "", "", "", str(len(r.samples)), verdict])
            continue
        for m in c.metrics:
            low, high = m.interval or [math.nan, math.nan]
            verdict = m.verdict
            rows.append([
                case, METRICS[m.metric].label, _value(m.metric, m.baseline), _value(m.metric, m.current),
                f"{_pct(m.change)} [{_pct(low)}, {_pct(high)}]" if m.interval else f"{_pct(m.change)} [no interval]",
                f"{m.tolerance * 100:g}%",
                f"{m.p_value:.2g}" if m.p_value is not None else "-", str(m.n_current),
                (marks or {}).get(verdict, verdict),
            ])
    return rows


def settle_text(c: CaseComparison) -> str:
    """What would likely settle an inconclusive case: more pairs (and about how long)."""
    pairs = max((m.n_current for m in c.metrics), default=0)
    if c.more_pairs is None:
        return ("more pairs are unlikely to settle it soon: its change sits near the tolerance "
                f"(or {10 * pairs} pairs would not do); a quieter machine or another order might")
    time = f" (~{c.more_seconds / 60:.1f} min)" if c.more_seconds is not None else ""
    return (f"about {c.more_pairs} more pairs{time} would likely settle it: "
            f"--mlx-ab-pairs MIN:{pairs + c.more_pairs}")


def inconclusive_lines(results: Sequence[CaseResult]) -> list[str]:
    """One line per inconclusive case: the test, what is too wide, and what would settle it."""
    lines = []
    for r in results:
        c = r.comparison
        if r.side == "head" and c is not None and c.status == "inconclusive":
            why = c.note.split("; ")[0].removeprefix("inconclusive: ")
            lines.append(f"{case_label(r)} ({r.model}): {why}; {settle_text(c)}")
    return lines


def estimator_note(kind: str | None) -> str:
    """What the Base and Head columns hold, and why they differ from the per-side tables."""
    if kind is None:
        return "Base and Head: what each side's code asked for, or measured, where it differs"
    if kind == "fast":
        return ("Base and Head: each side's fast end over the pairs, the 90th percentile of tok/s and "
                "the 10th of times and memory (a busy host only slows rounds), not the medians of the "
                "per-side tables above, hence other figures; the change is the ratio of the two, its "
                "interval a paired bootstrap")
    return ("Base and Head: each side's median over the pairs, as in the per-side tables; the change is "
            "the Hodges-Lehmann estimate of the per-pair ratios (not the ratio of the two medians), "
            "its interval Wilcoxon's")


def ab_section(results: Sequence[CaseResult]) -> list[str]:
    """The terminal lines of a model's A/B comparison, with what each case could detect."""
    heads = [r for r in results if r.side == "head" and r.comparison is not None]
    if not heads:
        return []
    kind = estimator(heads)
    lines = render_table(columns(kind), ab_rows(heads))
    lines.append("")
    lines.append(estimator_note(kind))
    for r in heads:
        c = r.comparison
        assert c is not None
        detect = ", ".join(f"{METRICS[m.metric].label} {m.detectable * 100:.1f}%"
                           for m in c.metrics if m.detectable is not None)
        settle = f"; {settle_text(c)}" if c.status == "inconclusive" else ""
        lines.append(f"{case_label(r)}: {c.note}{settle}"
                     + (f"; smallest worsening detectable: {detect}" if detect else ""))
    return lines


def ab_markdown(results: Sequence[CaseResult], *, machine: dict[str, Any], counts: dict[str, int],
                inconclusive_fails: bool = False) -> str:
    """The pull-request comment of an A/B run: base and head side by side per model."""
    lines = [f"## pytest-mlxvlm A/B on `{machine.get('key')}`", "",
             f"**{gate_summary(counts, AB_COUNTS)}** ({machine.get('chip')}, {machine.get('backend')})", ""]
    for model, cases in by_model([r for r in results if r.side == "head"]).items():
        lines += [f"### {model}", ""]
        lines += render_table(columns(estimator(cases)), ab_rows(cases, MARK))
        lines += ["", estimator_note(estimator(cases))]
        undecided = inconclusive_lines(cases)
        if undecided:
            what = "fails the job (--mlx-ab-inconclusive fail)" if inconclusive_fails else \
                "passes, but nothing was shown either way (--mlx-ab-inconclusive fail fails it)"
            lines += ["", f"**{MARK['inconclusive']}**: {what}", ""] + [f"- {line}" for line in undecided]
        notes = sorted({r.comparison.note for r in cases if r.comparison is not None and r.comparison.note})
        lines += [""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines) + "\n"
