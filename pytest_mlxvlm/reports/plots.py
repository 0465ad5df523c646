"""One series as a PNG (matplotlib), for Markdown summaries that cannot show the site's SVG.

The same marks as the SVG chart: session medians with their samples' interquartile range,
each level with its tolerance band, change points labelled with the change and the commits,
dates and commits on a decimated axis, a legend, TTFT in milliseconds.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..common.files import atomic_write_bytes
from .svgchart import COLOURS, MAX_DRAWN, date_label, display, short_span, tick_positions
from .trends import Series, short


MARGINS = {"left": 0.075, "right": 0.985, "top": 0.92, "bottom": 0.25}  # room for labels and legend


def figure_module() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), imported when first asked for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(series: Series, path: Path, title: str) -> None:
    """Write the PNG of one series to ``path``."""
    atomic_write_bytes(path, png_bytes(figure(series, title)))


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes (the same bytes for the same figure), closed."""
    plt = figure_module()
    image = io.BytesIO()
    try:
        fig.savefig(image, format="png", dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)
    return image.getvalue()


def figure(series: Series, title: str) -> Any:
    """The matplotlib figure of one series."""
    import numpy as np

    plt = figure_module()
    shown = display(series.metric)
    factor = shown.factor
    n = len(series.sessions)
    size = max(1, -(-n // MAX_DRAWN))
    medians = np.asarray([s.median for s in series.sessions]) * factor
    quartiles = [s.quartiles() for s in series.sessions]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    fig.subplots_adjust(**MARGINS)  # fixed margins: constrained layout costs half the time
    x = np.arange(n)
    has_spread = [i for i, q in enumerate(quartiles) if q is not None][::size]
    if has_spread:
        ax.vlines(has_spread, [quartiles[i][0] * factor for i in has_spread],  # type: ignore[index]
                  [quartiles[i][1] * factor for i in has_spread], colors=COLOURS["iqr"], lw=2,  # type: ignore[index]
                  label="interquartile range of its samples")
    ax.plot(x, medians, color=COLOURS["median"], lw=1.3, marker="o" if n <= 200 else None, ms=3,
            label="session median")
    tolerance = series.tolerance
    for k, (start, end, level) in enumerate(series.levels()):
        lo, hi = level * factor * (1 - tolerance), level * factor * (1 + tolerance)
        ax.fill_between([start - 0.5, end - 0.5], lo, hi, color=COLOURS["band"], alpha=0.08, lw=0,
                        label=f"level ± tolerance ({tolerance * 100:.0f}%)" if k == 0 else None)
        ax.hlines(level * factor, start - 0.5, end - 0.5, colors=COLOURS["band"], linestyles=":", alpha=0.6)
    for excursion in series.excursions:
        ax.axvspan(excursion.start - 0.5, excursion.end - 0.5, color=COLOURS["excursion"], alpha=0.18,
                   lw=0, label="excursion" if excursion is series.excursions[0] else None)
    if series.outliers:
        ax.plot(series.outliers, medians[series.outliers], ls="none", marker="o", ms=6, mfc="white",
                mec=COLOURS["outlier"], label="outlier session")
    labelled: set[bool] = set()
    top = ax.get_ylim()[1]
    for cp in series.change_points:
        colour = COLOURS["regression" if cp.regression else "improvement"]
        ax.axvline(cp.index - 0.5, color=colour, ls="--", lw=1.3,
                   label=None if cp.regression in labelled else ("regression" if cp.regression else "improvement"))
        labelled.add(cp.regression)
        right_side = cp.index < n * 0.6
        ax.annotate(f"{cp.change * 100:+.0f}% {short(cp.commits[0])}→{short(cp.commits[1])}",
                    (cp.index - 0.5, top), xytext=(4 if right_side else -4, -4), textcoords="offset points",
                    ha="left" if right_side else "right", va="top", color=colour, fontsize=8,
                    fontweight="bold")
    ticks = tick_positions(n, width=820)
    same_day = short_span([s.date for s in (series.sessions[0], series.sessions[-1]) if s.date])
    ax.set_xticks(ticks, [f"{date_label(series.sessions[i].date, same_day)}\n{short(series.sessions[i].commit)}"
                          for i in ticks], fontsize=7)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylabel(f"{shown.label} ({shown.unit})", fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", color="#eee")
    ax.set_title(title, fontsize=9, loc="left")
    fig.legend(loc="lower center", ncols=6, fontsize=7, frameon=False)
    return fig
