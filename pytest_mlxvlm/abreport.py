"""Reports of paired A/B runs: base and head side by side, each change with its interval."""

from __future__ import annotations

import math
from typing import Any, Sequence

from .report import by_model, gate_summary, render_table
from .results import METRICS, CaseResult

AB_COLUMNS = ("Case", "Metric", "Base", "Head", "Change [interval]", "p", "Pairs", "Verdict")
MARK = {"regressed": "❌ regressed", "improved": "🟢 improved", "ok": "✅ ok"}


def _value(metric: str, value: float) -> str:
    unit = METRICS[metric].unit
    if unit == "s":
        return f"{value * 1000:.0f} ms"
    if unit == "GB":
        return f"{value:.2f} GB"
    return f"{value:.1f} {unit}"


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%" if math.isfinite(x) else "n/a"


def ab_rows(results: Sequence[CaseResult], marks: dict[str, str] | None = None) -> list[list[str]]:
    """One row per head case and gated metric; a changed workload is one row."""
    rows = []
    for r in results:
        c = r.comparison
        if r.side != "head" or c is None:
            continue
        case = r.resolution
        if c.status == "workload-changed":
            what = "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in c.workload_changes.items())
            rows.append([case, "workload", "", "", what, "", str(len(r.samples)), "workload changed"])
            continue
        for m in c.metrics:
            low, high = m.interval or [math.nan, math.nan]
            rows.append([
                case, METRICS[m.metric].label, _value(m.metric, m.baseline), _value(m.metric, m.current),
                f"{_pct(m.change)} [{_pct(low)}, {_pct(high)}]",
                f"{m.p_value:.2g}" if m.p_value is not None else "-", str(m.n_current),
                (marks or {}).get(m.verdict, m.verdict),
            ])
    return rows


def ab_section(results: Sequence[CaseResult]) -> list[str]:
    """The terminal lines of a model's A/B comparison, with what each case could detect."""
    heads = [r for r in results if r.side == "head" and r.comparison is not None]
    if not heads:
        return []
    lines = render_table(AB_COLUMNS, ab_rows(heads))
    lines.append("")
    lines.append(_compared(heads))
    for r in heads:
        c = r.comparison
        detect = ", ".join(f"{METRICS[m.metric].label} {m.detectable * 100:.1f}%"
                           for m in c.metrics if m.detectable is not None)
        lines.append(f"{r.resolution}: {c.note}" + (f"; smallest worsening detectable: {detect}" if detect else ""))
    return lines


def _compared(heads: Sequence[CaseResult]) -> str:
    methods = {m.method for r in heads for m in (r.comparison.metrics if r.comparison else [])}
    if any(m.startswith("fast end") for m in methods):
        return ("Base and Head: each side's fast end, the 90th percentile of tok/s and the 10th of "
                "times (a busy host only slows rounds); the interval is a paired bootstrap")
    return "Base and Head: medians; the change is the Hodges-Lehmann estimate of the per-pair ratios"


def ab_markdown(results: Sequence[CaseResult], *, machine: dict[str, Any], counts: dict[str, int]) -> str:
    """The pull-request comment of an A/B run: base and head side by side per model."""
    lines = [f"## pytest-mlxvlm A/B on `{machine.get('key')}`", "",
             f"**{gate_summary(counts, ('compared', 'regressed'))}** ({machine.get('chip')}, {machine.get('backend')})", ""]
    for model, cases in by_model([r for r in results if r.side == "head"]).items():
        lines += [f"### {model}", ""]
        lines += render_table(AB_COLUMNS, ab_rows(cases, MARK))
        lines += ["", _compared(cases)]
        notes = sorted({r.comparison.note for r in cases if r.comparison is not None and r.comparison.note})
        lines += [""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines) + "\n"
