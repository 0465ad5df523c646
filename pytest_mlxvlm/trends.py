"""Change points in a history: series per (chip, model, case, metric), found with ruptures."""

from __future__ import annotations

import html
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .compare import DEFAULT_TOLERANCES
from .files import atomic_write_text
from .results import METRICS

MIN_POINTS = 6


@dataclass
class ChangePoint:
    """A level shift between two commits of a series."""

    index: int  # first point of the new level
    before: float  # median of the segment before
    after: float  # median of the segment after
    change: float  # relative, signed
    regression: bool
    p_value: float  # Mann-Whitney, session medians before vs after
    commits: tuple[str | None, str | None]  # last commit before, first commit after


@dataclass
class Series:
    chip: str
    model: str
    case: str
    metric: str
    points: list[tuple[str, str | None, float]] = field(default_factory=list)  # date, commit, median
    change_points: list[ChangePoint] = field(default_factory=list)
    note: str = ""

    @property
    def values(self) -> np.ndarray:
        return np.asarray([v for _, _, v in self.points], dtype=float)


def build_series(records: Sequence[dict[str, Any]], metrics: Sequence[str]) -> list[Series]:
    """One series per chip, model, case and metric; chips are never mixed."""
    table: dict[tuple[str, str, str, str], Series] = {}
    for rec in sorted(records, key=lambda r: r.get("date", "")):
        chip = rec["machine"].get("key", "unknown")
        for case in rec["cases"]:
            for metric in metrics:
                value = case.get("medians", {}).get(metric)
                if value is None:
                    continue
                key = (chip, case["model"], case.get("case_key") or case["resolution"], metric)
                series = table.setdefault(key, Series(*key))
                series.points.append((rec.get("date", ""), rec.get("commit"), float(value)))
    return list(table.values())


def detect(series: Series, tolerance: float, penalty: float = 3.0, alpha: float = 0.05) -> None:
    """Find level shifts: PELT (L2 cost on log values) proposes, and a shift is kept when it is
    larger than the tolerance and the session medians on its two sides differ (Mann-Whitney,
    two-sided, p < alpha), so that one odd session does not make a change point."""
    import ruptures as rpt
    from scipy.stats import mannwhitneyu

    values = series.values
    if len(values) < MIN_POINTS:
        series.note = f"{len(values)} points: too few to look for change points (need {MIN_POINTS})"
        return
    signal = np.log(np.clip(values, 1e-12, None)).reshape(-1, 1)
    scale = float(np.median(np.abs(np.diff(signal[:, 0])))) or 1e-6
    breaks = rpt.Pelt(model="l2", min_size=2, jump=1).fit(signal / scale).predict(pen=penalty * math.log(len(values)))
    cuts = list(breaks[:-1])

    def judged(k: int) -> tuple[float, float, float, float]:
        """(before, after, change, p) of cut k against the segments beside it, as the cuts stand."""
        start = cuts[k - 1] if k else 0
        end = cuts[k + 1] if k + 1 < len(cuts) else len(values)
        left, right = values[start:cuts[k]], values[cuts[k]:end]
        before, after = float(np.median(left)), float(np.median(right))
        change = (after - before) / before if before else 0.0
        return before, after, change, float(mannwhitneyu(left, right, alternative="two-sided").pvalue)

    # Drop the weakest unconvincing cut and judge the rest again on the merged segments.
    verdicts: list[tuple[float, float, float, float]] = []
    while cuts:
        verdicts = [judged(k) for k in range(len(cuts))]
        weak = [k for k, (_, _, change, p) in enumerate(verdicts)
                if abs(change) <= tolerance or not p < alpha]
        if not weak:
            break
        cuts.pop(max(weak, key=lambda k: (verdicts[k][3], -abs(verdicts[k][2]))))
    higher = METRICS[series.metric].better == "higher"
    for cut, (before, after, change, p_value) in zip(cuts, verdicts):
        worse = change < 0 if higher else change > 0
        series.change_points.append(ChangePoint(
            index=cut, before=before, after=after, change=change, regression=worse, p_value=p_value,
            commits=(series.points[cut - 1][1], series.points[cut][1]),
        ))


def plot(series_group: Sequence[Series], path: Path, title: str) -> None:
    """One PNG: each metric over the sessions, change points marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(series_group), 1, figsize=(9, 2.4 * len(series_group)), squeeze=False)
    for ax, s in zip(axes[:, 0], series_group):
        x = list(range(len(s.points)))
        ax.plot(x, s.values, marker="o", lw=1)
        for cp in s.change_points:
            ax.axvline(cp.index - 0.5, color="red" if cp.regression else "green", ls="--")
            ax.annotate(f"{cp.change * 100:+.0f}%", (cp.index - 0.5, float(np.max(s.values))),
                        color="red" if cp.regression else "green", fontsize=8)
        ax.set_ylabel(f"{METRICS[s.metric].label} ({METRICS[s.metric].unit})", fontsize=8)
        labels = [(c or "?")[:7] for _, c, _ in s.points]
        ax.set_xticks(x, labels, rotation=60, fontsize=6)
    axes[0, 0].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(records: Sequence[dict[str, Any]], out: Path,
           metrics: Sequence[str] = ("end_to_end_tps", "generation_tps", "ttft_s")) -> tuple[str, list[str]]:
    """Markdown + HTML summary and PNG plots into ``out``; returns (markdown, new regressions)."""
    out.mkdir(parents=True, exist_ok=True)
    all_series = build_series(records, metrics)
    for s in all_series:
        detect(s, DEFAULT_TOLERANCES.get(s.metric, 0.10))
    lines = ["# pytest-mlxvlm history report", "",
             "| Chip | Model | Case | Metric | Points | Change points |", "|---|---|---|---|---|---|"]
    regressions = []
    groups: dict[tuple[str, str, str], list[Series]] = defaultdict(list)
    for s in all_series:
        groups[(s.chip, s.model, s.case)].append(s)
        found = "; ".join(
            f"{'REGRESSION' if cp.regression else 'improvement'} {cp.change * 100:+.1f}% between "
            f"{(cp.commits[0] or '?')[:10]} and {(cp.commits[1] or '?')[:10]}" for cp in s.change_points
        ) or (s.note or "none")
        lines.append(f"| {s.chip} | {s.model} | `{s.case}` | {METRICS[s.metric].label} | "
                     f"{len(s.points)} | {found} |")
        last = s.change_points[-1] if s.change_points else None
        if last is not None and last.regression:
            regressions.append(
                f"{s.chip} {s.model} {s.case} {s.metric}: {last.change * 100:+.1f}% between commits "
                f"{last.commits[0]} and {last.commits[1]}"
            )
    lines.append("")
    for i, ((chip, model, case), group) in enumerate(sorted(groups.items())):
        name = f"plot-{i:03d}.png"
        plot(group, out / name, f"{model} {case} on {chip}")
        lines.append(f"![{model} {case} on {chip}]({name})")
    markdown = "\n".join(lines) + "\n"
    atomic_write_text(out / "report.md", markdown)
    images = "".join(f'<img src="plot-{i:03d}.png" alt="plot">' for i in range(len(groups)))
    atomic_write_text(out / "report.html", "<!doctype html><meta charset=utf-8><title>pytest-mlxvlm"
                      f"</title><pre>{html.escape(markdown)}</pre>{images}")
    return markdown, regressions
