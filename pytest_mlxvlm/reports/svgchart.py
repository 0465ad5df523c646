"""One series as an SVG chart, written by hand: no library, no script, no network.

Each session is its median (a line through the sessions) with the interquartile range of its
samples (a whisker); each level between change points is a line with its tolerance band;
change points are dashed lines labelled with the change and the commits around them; an
excursion is a grey band, an outlier session an open orange circle. The x axis is the
sessions in order, labelled with dates and commits at no more than ``MAX_TICKS`` places; more
than ``MAX_DRAWN`` sessions are drawn in bins (the median of their medians, the widest of
their ranges), so a chart of ten thousand sessions weighs what one of six hundred does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Callable

from ..results import METRICS
from .trends import Series, short

WIDTH, HEIGHT = 960, 330
LEFT, RIGHT, TOP, BOTTOM = 74, 16, 52, 46  # margins: y labels, -, legend, x labels
MAX_DRAWN = 600  # points drawn at most; beyond, sessions are drawn in bins
MAX_MARKERS = 200  # a linked marker per session up to this many drawn points
MAX_TICKS = 8
COLOURS = {"median": "#1f5fa8", "iqr": "#7ea6d8", "band": "#1f5fa8", "regression": "#c62828",
           "improvement": "#2e7d32", "outlier": "#ef6c00", "excursion": "#9e9e9e"}

CommitLink = Callable[[str | None], str | None]


@dataclass(frozen=True)
class Display:
    """How a metric is shown: its label, unit and the factor from stored to shown values."""

    label: str
    unit: str
    factor: float


def display(metric: str) -> Display:
    """Seconds are shown in milliseconds (TTFT of 80 ms, not 0.08 s)."""
    m = METRICS[metric]
    if m.unit == "s":
        return Display(m.label, "ms", 1000.0)
    return Display(m.label, m.unit, 1.0)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if not high > low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(f * power for f in (1, 2, 2.5, 5, 10) if f * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        if value >= low - step * 1e-9:
            ticks.append(round(value, 12))
        value += step
    return ticks


def tick_positions(n: int, count: int = MAX_TICKS, width: float = WIDTH - LEFT - RIGHT,
                   spacing: float = 90.0) -> list[int]:
    """At most ``count`` session indices, evenly stepped and at least ``spacing`` pixels apart
    on an axis ``width`` wide: the first session, every step-th after it, and the last where
    there is room for its label."""
    if n <= 0:
        return []
    per_session = width / n
    step = max(1, math.ceil((n - 1) / max(1, count - 1)), math.ceil(spacing / per_session))
    ticks = list(range(0, n, step))
    if ticks[-1] != n - 1 and (n - 1 - ticks[-1]) * per_session >= spacing:
        ticks.append(n - 1)
    return ticks


def date_label(date: str, same_day: bool) -> str:
    """``2026-11-27``, or ``11-27 06:07`` when the chart's sessions all fall within a day or two."""
    if same_day and len(date) >= 16:
        return f"{date[5:10]} {date[11:16]}"
    return date[:10] or "no date"


def short_span(dates: list[str]) -> bool:
    """Whether dated sessions span less than two days (then times tell them apart)."""
    from datetime import datetime, timezone

    try:
        first, last = (datetime.fromisoformat(d) for d in (dates[0], dates[-1]))
    except (ValueError, IndexError, TypeError):
        return False
    first, last = (d if d.tzinfo else d.replace(tzinfo=timezone.utc) for d in (first, last))  # naive: UTC
    return abs((last - first).total_seconds()) < 2 * 86400


def fmt(value: float) -> str:
    """A figure with three significant digits, as the axis and tooltips print it."""
    if value == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}"


@dataclass
class _Point:
    index: float  # session position (a bin's centre)
    median: float
    low: float | None
    high: float | None
    first: int  # first and last session of the point (one session unless binned)
    last: int


def _points(series: Series, factor: float) -> tuple[list[_Point], int]:
    """The drawn points and the bin size (1: every session)."""
    n = len(series.sessions)
    size = max(1, math.ceil(n / MAX_DRAWN))
    points = []
    for start in range(0, n, size):
        chunk = series.sessions[start:start + size]
        medians = sorted(s.median * factor for s in chunk)
        quartiles = [q for q in (s.quartiles() for s in chunk) if q is not None]
        low = min(q[0] for q in quartiles) * factor if quartiles else None
        high = max(q[1] for q in quartiles) * factor if quartiles else None
        points.append(_Point(start + (len(chunk) - 1) / 2, medians[len(medians) // 2], low, high,
                             start, start + len(chunk) - 1))
    return points, size


def _text(x: float, y: float, content: str, *, anchor: str = "start", cls: str = "",
          extra: str = "") -> str:
    css = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{css}{extra}>{escape(content)}</text>'


def chart(series: Series, link: CommitLink = lambda commit: None, *, title: str = "") -> str:
    """The SVG element of one series."""
    shown = display(series.metric)
    factor = shown.factor
    points, bin_size = _points(series, factor)
    n = len(series.sessions)
    tolerance = series.tolerance
    levels = series.levels()
    lows = [p.low if p.low is not None else p.median for p in points]
    highs = [p.high if p.high is not None else p.median for p in points]
    lows += [level * factor * (1 - tolerance) for _, _, level in levels]
    highs += [level * factor * (1 + tolerance) for _, _, level in levels]
    y_low, y_high = min(lows), max(highs)
    pad = (y_high - y_low) * 0.06 or abs(y_high) * 0.1 or 1.0
    y_min = max(0.0, y_low - pad) if y_low >= 0 else y_low - pad
    y_max = y_high + pad * 2.5  # room under the change points' labels
    ticks = nice_ticks(y_min, y_max)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(index: float) -> float:
        return LEFT + (index + 0.5) * plot_w / n

    def y_of(value: float) -> float:
        return TOP + plot_h - (value - y_min) / (y_max - y_min) * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
           f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title or series.metric)}" '
           f'data-metric="{series.metric}" data-sessions="{n}">',
           f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#bbb"/>']
    # grid and y axis
    for tick in ticks:
        y = y_of(tick)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(_text(LEFT - 6, y + 4, fmt(tick), anchor="end", cls="tick"))
    out.append(_text(16, TOP + plot_h / 2, f"{shown.label} ({shown.unit})", anchor="middle", cls="axis",
                     extra=f' transform="rotate(-90 16 {TOP + plot_h / 2:.1f})"'))
    # excursions, levels and their tolerance bands
    for excursion in series.excursions:
        x0, x1 = x_of(excursion.start - 0.5), x_of(excursion.end - 0.5)
        out.append(f'<rect class="excursion" x="{x0:.1f}" y="{TOP}" width="{x1 - x0:.1f}" height="{plot_h}" '
                   f'fill="{COLOURS["excursion"]}" fill-opacity="0.18"><title>excursion of '
                   f'{excursion.change * 100:+.0f}%, back at the level after</title></rect>')
    for start, end, level in levels:
        x0, x1 = x_of(start - 0.5), x_of(end - 0.5)
        top, bottom = y_of(level * factor * (1 + tolerance)), y_of(level * factor * (1 - tolerance))
        out.append(f'<rect class="band" x="{x0:.1f}" y="{top:.1f}" width="{x1 - x0:.1f}" '
                   f'height="{bottom - top:.1f}" fill="{COLOURS["band"]}" fill-opacity="0.08"/>')
        y = y_of(level * factor)
        out.append(f'<line class="level" x1="{x0:.1f}" x2="{x1:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="{COLOURS["band"]}" stroke-opacity="0.5" stroke-dasharray="2 3"/>')
    # spread, medians, markers
    whiskers = " ".join(f"M{x_of(p.index):.1f} {y_of(p.high):.1f}V{y_of(p.low):.1f}"
                        for p in points if p.low is not None and p.high is not None)
    if whiskers:
        out.append(f'<path class="iqr" d="{whiskers}" stroke="{COLOURS["iqr"]}" stroke-width="2"/>')
    line = " ".join(f"{x_of(p.index):.1f},{y_of(p.median):.1f}" for p in points)
    out.append(f'<polyline class="median" points="{line}" fill="none" stroke="{COLOURS["median"]}" '
               'stroke-width="1.5"/>')
    outliers = set(series.outliers)
    if len(points) <= MAX_MARKERS:
        for p in points:
            session = series.sessions[p.first]
            odd = p.first in outliers
            spread = f", IQR {fmt(p.low)}-{fmt(p.high)}" if p.low is not None and p.high is not None else ""
            tip = (f"{session.date[:16].replace('T', ' ')} {short(session.commit)}: median "
                   f"{fmt(p.median)} {shown.unit}{spread}{' (outlier: left out of the search)' if odd else ''}")
            colour = COLOURS["outlier"] if odd else COLOURS["median"]
            marker = (f'<circle class="{"outlier" if odd else "session"}" cx="{x_of(p.index):.1f}" '
                      f'cy="{y_of(p.median):.1f}" r="{4 if odd else 3}" fill="{"#fff" if odd else colour}" '
                      f'stroke="{colour}" stroke-width="1.5"><title>{escape(tip)}</title></circle>')
            url = link(session.commit)
            out.append(f'<a href="{escape(url)}">{marker}</a>' if url else marker)
    else:
        for index in outliers:
            y = y_of(series.sessions[index].median * factor)
            out.append(f'<circle class="outlier" cx="{x_of(index):.1f}" cy="{y:.1f}" '
                       f'r="4" fill="#fff" stroke="{COLOURS["outlier"]}" stroke-width="1.5"/>')
    # change points: a dashed line each, labelled inside the plot
    for cp in series.change_points:
        colour = COLOURS["regression" if cp.regression else "improvement"]
        x = x_of(cp.index - 0.5)
        out.append(f'<line class="change-point" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + plot_h}" '
                   f'stroke="{colour}" stroke-width="1.5" stroke-dasharray="5 3"/>')
        label = f"{cp.change * 100:+.0f}% {short(cp.commits[0])}→{short(cp.commits[1])}"
        right_side = x < LEFT + plot_w * 0.6
        out.append(_text(x + (4 if right_side else -4), TOP + 13, label, anchor="start" if right_side else "end",
                         cls="cp-label", extra=f' style="fill: {colour}"'))
    # x axis: dates and commits at a few places
    dated = [s.date for s in (series.sessions[0], series.sessions[-1]) if s.date]
    same_day = short_span(dated)
    for index in tick_positions(n):
        x = x_of(index)
        session = series.sessions[index]
        anchor = "start" if index == 0 and n > 1 else "end" if index == n - 1 and n > 1 else "middle"
        if n == 1:
            anchor = "middle"
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + plot_h}" y2="{TOP + plot_h + 4}" stroke="#888"/>')
        out.append(_text(x, TOP + plot_h + 17, date_label(session.date, same_day), anchor=anchor, cls="tick"))
        commit = _text(x, TOP + plot_h + 31, short(session.commit), anchor=anchor, cls="tick commit")
        url = link(session.commit)
        out.append(f'<a href="{escape(url)}">{commit}</a>' if url else commit)
    if bin_size > 1:
        out.append(_text(LEFT + plot_w, TOP + plot_h + 44, f"{n} sessions, drawn in bins of {bin_size}",
                         anchor="end", cls="note"))
    out.append(_legend(series, tolerance))
    out.append("</svg>")
    return "\n".join(out)


def _legend(series: Series, tolerance: float) -> str:
    """The legend, in the top margin: what each mark means."""
    items: list[tuple[str, str]] = [
        (f'<line x1="0" x2="18" y1="0" y2="0" stroke="{COLOURS["median"]}" stroke-width="1.5"/>'
         f'<circle cx="9" cy="0" r="3" fill="{COLOURS["median"]}"/>', "session median"),
        (f'<line x1="9" x2="9" y1="-6" y2="6" stroke="{COLOURS["iqr"]}" stroke-width="2"/>',
         "interquartile range of its samples"),
        (f'<rect x="0" y="-6" width="18" height="12" fill="{COLOURS["band"]}" fill-opacity="0.15"/>'
         f'<line x1="0" x2="18" y1="0" y2="0" stroke="{COLOURS["band"]}" stroke-dasharray="2 3"/>',
         f"level ± tolerance ({tolerance * 100:.0f}%)"),
    ]
    kinds = {cp.regression for cp in series.change_points}
    for regression in (True, False):
        if regression in kinds:
            colour = COLOURS["regression" if regression else "improvement"]
            items.append((f'<line x1="9" x2="9" y1="-7" y2="7" stroke="{colour}" stroke-width="1.5" '
                          'stroke-dasharray="4 2"/>', "regression" if regression else "improvement"))
    if series.outliers:
        items.append((f'<circle cx="9" cy="0" r="4" fill="#fff" stroke="{COLOURS["outlier"]}" stroke-width="1.5"/>',
                      "outlier session"))
    if series.excursions:
        items.append((f'<rect x="0" y="-6" width="18" height="12" fill="{COLOURS["excursion"]}" fill-opacity="0.3"/>',
                      "excursion"))
    parts = ['<g class="legend">']
    x, y = LEFT, 16
    for mark, label in items:
        width = 26 + 6.2 * len(label) + 18  # the mark, the label at ~6.2 px a character, a gap
        if x + width > WIDTH - RIGHT:
            x, y = LEFT, y + 18
        parts.append(f'<g class="legend-item" transform="translate({x:.0f} {y})">{mark}'
                     f'{_text(24, 4, label, cls="legend-text")}</g>')
        x += width
    parts.append("</g>")
    return "".join(parts)


STYLE = """
svg.chart text { font: 11px system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; fill: #333; }
svg.chart text.axis { font-size: 12px; }
svg.chart text.cp-label { font-weight: 600; }
svg.chart text.note { fill: #777; }
svg.chart a text.commit { fill: #1f5fa8; }
"""


def charts_css() -> str:
    """The style sheet the charts need, for a page's ``<style>``."""
    return STYLE
