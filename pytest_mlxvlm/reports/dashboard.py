"""The nightly report as a static site, readable offline: a summary page of what changed, a
page per chip, model and case with an SVG chart per metric, a CSV of every session of every
series, and a Markdown summary with a PNG per series (for a CI step summary).

    OUT/index.html                            what changed, what to watch, every series
    OUT/CHIP/MODEL/CASE.html                  the case's charts (SVG inline: no script, no CDN)
    OUT/CHIP/MODEL/CASE-METRIC.png            the same charts as PNGs (unless png=False)
    OUT/report.csv                            one row per session and series
    OUT/report.md                             the summary in Markdown, linking the PNGs
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import quote

from ..common.files import atomic_write_text
from ..models.loading import model_slug
from ..results import METRICS
from .history import repository_url
from .svgchart import CommitLink, chart, charts_css, display, fmt
from .trends import MIN_POINTS, REPORTED_METRICS, ChangePoint, Series, analyse, new_regressions, short

Progress = Callable[[str], None]


def commit_links(repository: str | None) -> CommitLink:
    """Commit -> its page: ``REPO/commit/SHA``, or a template with ``{commit}`` in it."""
    if not repository:
        return lambda commit: None
    if "{commit}" in repository:
        return lambda commit: repository.replace("{commit}", quote(commit)) if commit else None
    base = repository.rstrip("/")
    return lambda commit: f"{base}/commit/{quote(commit)}" if commit else None


def recorded_repository(records: Sequence[dict[str, Any]]) -> str | None:
    """The repository the newest session that names one was run from."""
    for record in reversed(records):
        url = repository_url(record.get("repository"))
        if url:
            return url
    return None


def display_case(case: str) -> str:
    """``module::test[224x224]`` -> ``test[224x224]``."""
    return case.rsplit("::", 1)[-1]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-.") or "case"


def page_names(all_series: Iterable[Series]) -> dict[tuple[str, str, str], str]:
    """(chip, model, case) -> the page's path without suffix, unique: CHIP/MODEL/CASE."""
    names: dict[tuple[str, str, str], str] = {}
    taken: set[str] = set()
    for s in sorted(all_series, key=lambda s: s.key):
        key = (s.chip, s.model, s.case)
        if key in names:
            continue
        model = re.sub(r"[^A-Za-z0-9._-]+", "-", model_slug(s.model)).strip("-.") or "model"  # URL-safe
        name = f"{_slug(s.chip)}/{model}/{_slug(display_case(s.case))}"
        if name in taken:
            name += "-" + hashlib.sha256("\0".join(key).encode()).hexdigest()[:8]
        taken.add(name)
        names[key] = name
    return names


def metric_slug(metric: str) -> str:
    return _slug(METRICS[metric].label.lower())


@dataclass
class Site:
    """What ``build`` made: the series (with change points) and the files written."""

    series: list[Series]
    regressions: list[tuple[Series, ChangePoint]]
    files: list[Path] = field(default_factory=list)
    sessions: int = 0
    work_lines: list[str] = field(default_factory=list)  # changes of work profiles, exact


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #222; margin: 24px auto; max-width: 1000px; padding: 0 12px; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} h2 {{ font-size: 17px; margin: 28px 0 8px; }}
table {{ border-collapse: collapse; margin: 8px 0; }}
th, td {{ border-bottom: 1px solid #e3e3e3; padding: 4px 10px 4px 0; text-align: left; vertical-align: top; }}
th {{ font-weight: 600; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.regression {{ color: #c62828; font-weight: 600; }} .improvement {{ color: #2e7d32; font-weight: 600; }}
.muted {{ color: #666; }} code {{ font-size: 12px; }} a {{ color: #1f5fa8; }}
figure {{ margin: 8px 0 20px; }} figcaption {{ color: #555; font-size: 13px; }}
{charts}
</style></head>
<body>
{body}
</body></html>
"""


def _page(title: str, body: str) -> str:
    return PAGE.format(title=escape(title), body=body, charts=charts_css())


def _link(url: str | None, text: str) -> str:
    return f'<a href="{escape(url)}">{escape(text)}</a>' if url else escape(text)


def _between(cp: ChangePoint, link: CommitLink) -> str:
    """The two commits around a change point, linked, with their dates."""
    before, after = cp.commits
    return (f"{_link(link(before), short(before))} → {_link(link(after), short(after))} "
            f'<span class="muted">({escape(cp.dates[0][:10])} → {escape(cp.dates[1][:10])})</span>')


def _verdict(cp: ChangePoint) -> str:
    kind = "regression" if cp.regression else "improvement"
    return f'<span class="{kind}">{kind} {cp.change * 100:+.1f}%</span>'


def _level(value: float, metric: str) -> str:
    shown = display(metric)
    return f"{fmt(value * shown.factor)} {shown.unit}"


def _series_title(s: Series) -> str:
    return f"{s.model} · {display_case(s.case)} · {METRICS[s.metric].label} · {s.chip}"


def _evidence(cp: ChangePoint) -> str:
    return f"p={cp.p_value:.2g} ({cp.test})"


def too_few_note(all_series: Sequence[Series]) -> str:
    """``3 of 3 series have fewer than 6 sessions: too few to look for change points yet`` ("" if none)."""
    short_ones = sum(len(s.sessions) < MIN_POINTS for s in all_series)
    if not short_ones:
        return ""
    return (f"{short_ones} of {len(all_series)} series have fewer than {MIN_POINTS} sessions: too few to "
            "look for change points yet")


def index_page(site: Site, names: dict[tuple[str, str, str], str], link: CommitLink, source: str) -> str:
    """The summary page: what changed, what to watch, every series."""
    all_series = site.series
    dates = sorted(s.date for series in all_series for s in (series.sessions[0], series.sessions[-1]) if s.date)
    chips = sorted({s.chip for s in all_series})
    body = ["<h1>Performance history</h1>",
            f'<p class="muted">{site.sessions} sessions'
            + (f", {escape(dates[0][:10])} to {escape(dates[-1][:10])}" if dates else "")
            + f"; {len(all_series)} series on {escape(', '.join(chips) or 'no chip')}. "
            f"From {escape(source)}. "
            '<a href="report.csv">CSV of every session</a> · <a href="report.md">Markdown summary</a></p>']
    changes = sorted(((cp, s) for s in all_series for cp in s.change_points),
                     key=lambda item: (item[0].dates[1], item[1].key), reverse=True)
    newest = {id(cp) for _, cp in site.regressions}
    body.append('<h2 id="changes">What changed</h2>')
    if not changes:
        few = too_few_note(all_series)
        body.append("<p>No change point in any series." + (f" {escape(few)}." if few else "") + "</p>")
    else:
        body.append("<table><tr><th>Case</th><th>Metric</th><th>Change</th><th>Between</th><th>Level</th>"
                    "<th>Evidence</th></tr>")
        for cp, s in changes:
            page = names[(s.chip, s.model, s.case)] + ".html"
            flag = (' <span class="regression" title="the newest change point of its series: the report '
                    'exits 1">newest</span>' if id(cp) in newest else "")
            chip = f'<br><span class="muted">{escape(s.chip)}</span>' if len(chips) > 1 else ""
            body.append(f'<tr><td>{escape(s.model)} · <a href="{escape(page)}#{metric_slug(s.metric)}">'
                        f"{escape(display_case(s.case))}</a>{chip}</td><td>{escape(METRICS[s.metric].label)}</td>"
                        f"<td>{_verdict(cp)}{flag}</td><td>{_between(cp, link)}</td>"
                        f'<td class="num">{_level(cp.before, s.metric)} → {_level(cp.after, s.metric)}</td>'
                        f"<td>{escape(_evidence(cp))}</td></tr>")
        body.append("</table>")
    if site.work_lines:
        body.append('<h2 id="work">Work profile changes (exact)</h2>')
        body.append("<ul>" + "".join(f"<li>{escape(line)}</li>" for line in site.work_lines) + "</ul>")
    watch = []
    for s in all_series:
        page = names[(s.chip, s.model, s.case)] + ".html"
        title = f'<a href="{escape(page)}">{escape(_series_title(s))}</a>'
        if s.watch:
            watch.append(f"<li>{title}: {escape(s.watch)}</li>")
        for e in s.excursions:
            first, back = s.sessions[e.start], s.sessions[min(e.end, len(s.sessions) - 1)]
            watch.append(f"<li>{title}: an excursion of {e.change * 100:+.0f}% for {e.end - e.start} "
                         f"session(s) from {escape(short(first.commit))} ({escape(first.date[:10])}), back at "
                         f"the level at {escape(short(back.commit))}: not a change point</li>")
        if s.outliers:
            odd = ", ".join(short(s.sessions[i].commit) for i in s.outliers[:6])
            more = f" and {len(s.outliers) - 6} more" if len(s.outliers) > 6 else ""
            watch.append(f"<li>{title}: {len(s.outliers)} outlier session(s) left out of the "
                         f"search ({escape(odd)}{more})</li>")
    body.append('<h2 id="watch">To watch</h2>')
    body.append(f"<ul>{''.join(watch)}</ul>" if watch else "<p>Nothing.</p>")
    body.append('<h2 id="series">Every series</h2>')
    by_case: dict[tuple[str, str, str], dict[str, Series]] = defaultdict(dict)
    for s in all_series:
        by_case[(s.chip, s.model, s.case)][s.metric] = s
    metrics = [m for m in REPORTED_METRICS if any(m in group for group in by_case.values())]
    for chip in chips:
        body.append(f"<h3>{escape(chip)}</h3><table><tr><th>Model</th><th>Case</th><th>Sessions</th>"
                    + "".join(f"<th>{escape(display(m).label)} ({escape(display(m).unit)}), newest</th>"
                              for m in metrics)
                    + "<th>Change points</th></tr>")
        for (c, model, case), group in sorted(by_case.items()):
            if c != chip:
                continue
            page = names[(c, model, case)] + ".html"
            cells = []
            for m in metrics:
                s = group.get(m)
                cells.append(f'<td class="num">{_level(s.sessions[-1].median, m) if s else ""}</td>')
            sessions = max(len(s.sessions) for s in group.values())
            count = (sum(len(s.change_points) for s in group.values()) if sessions >= MIN_POINTS
                     else f'<span class="muted" title="change points are looked for from {MIN_POINTS} '
                     'sessions on">too few sessions</span>')
            body.append(f'<tr><td>{escape(model)}</td><td><a href="{escape(page)}">{escape(display_case(case))}'
                        f'</a></td><td class="num">{sessions}</td>{"".join(cells)}<td class="num">{count}</td></tr>')
        body.append("</table>")
    return _page("pytest-mlxvlm: performance history", "\n".join(body))


def case_page(group: Sequence[Series], name: str, link: CommitLink, png: bool) -> str:
    """A case's page: a chart per metric, and what was found in each."""
    first = group[0]
    up = "../" * name.count("/")
    body = [f'<p><a href="{up}index.html">← all series</a></p>',
            f"<h1>{escape(first.model)} · {escape(display_case(first.case))}</h1>",
            f'<p class="muted">on {escape(first.chip)} · <code>{escape(first.case)}</code></p>']
    base = name.rsplit("/", 1)[-1]
    for s in group:
        shown = display(s.metric)
        body.append(f'<h2 id="{metric_slug(s.metric)}">{escape(shown.label)} ({escape(shown.unit)})</h2>')
        caption = [f"{len(s.sessions)} sessions"]
        caption += [f"{'regression' if cp.regression else 'improvement'} {cp.change * 100:+.1f}% between "
                    f"{short(cp.commits[0])} and {short(cp.commits[1])} ({_evidence(cp)})" for cp in s.change_points]
        if not s.change_points:
            caption.append(s.note or "no change point")
        if s.watch:
            caption.append(s.watch)
        if png:
            caption.append(f'<a href="{escape(base)}-{metric_slug(s.metric)}.png">PNG</a>')
        body.append(f"<figure>{chart(s, link, title=_series_title(s))}<figcaption>"
                    + "; ".join(c if c.startswith("<a ") else escape(c) for c in caption)
                    + "</figcaption></figure>")
    return _page(f"{first.model} {display_case(first.case)}", "\n".join(body))


CSV_COLUMNS = ("chip", "model", "case", "metric", "unit", "session", "date", "commit", "median", "q1", "q3",
               "samples", "level", "outlier", "change")


def csv_text(all_series: Sequence[Series]) -> str:
    """One row per session of every series, in the metric's stored unit."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in sorted(all_series, key=lambda s: s.key):
        level_at: list[float | None] = [None] * len(s.sessions)
        for start, end, level in s.levels():
            level_at[start:end] = [level] * (end - start)
        changes = {cp.index: f"{'regression' if cp.regression else 'improvement'} {cp.change * 100:+.1f}%"
                   for cp in s.change_points}
        outliers = set(s.outliers)
        unit = METRICS[s.metric].unit
        for i, session in enumerate(s.sessions):
            quartiles = session.quartiles()
            writer.writerow([s.chip, s.model, s.case, s.metric, unit, i, session.date, session.commit or "",
                             repr(session.median), *(repr(q) for q in quartiles or ("", "")),
                             len(session.samples), "" if level_at[i] is None else repr(level_at[i]),
                             int(i in outliers), changes.get(i, "")])
    return buffer.getvalue()


def markdown(site: Site, names: dict[tuple[str, str, str], str], png: bool, base_url: str,
             dashboard_url: str = "") -> str:
    """The summary for a CI step summary or a pull request: changes, notes, a row per series.
    ``dashboard_url``: where the dashboard is viewed, if not at ``base_url`` (a raw-file URL
    serves the PNGs but shows HTML as text)."""
    prefix = base_url.rstrip("/") + "/" if base_url else ""
    dashboard = dashboard_url or f"{prefix}index.html"
    lines = ["# pytest-mlxvlm history report", "",
             f"{site.sessions} sessions, {len(site.series)} series. Dashboard: [{dashboard}]({dashboard})", ""]
    changes = [(cp, s) for s in site.series for cp in s.change_points]
    few = too_few_note(site.series)
    if few and not changes:
        lines += [f"No change point in any series: {few}.", ""]
    if changes:
        lines += ["## What changed", "", "| Model | Case | Metric | Change | Between | Evidence |",
                  "|---|---|---|---|---|---|"]
        for cp, s in sorted(changes, key=lambda item: item[0].dates[1], reverse=True):
            kind = "REGRESSION" if cp.regression else "improvement"
            lines.append(f"| {s.model} | `{display_case(s.case)}` | {METRICS[s.metric].label} | {kind} "
                         f"{cp.change * 100:+.1f}% | {short(cp.commits[0])} → {short(cp.commits[1])} | "
                         f"{_evidence(cp)} |")
        lines.append("")
    if site.work_lines:
        lines += ["## Work profile changes (exact)", "", *[f"- {line}" for line in site.work_lines], ""]
    notes = [f"- {_series_title(s)}: {s.watch}" for s in site.series if s.watch]
    notes += [f"- {_series_title(s)}: excursion of {e.change * 100:+.0f}% for {e.end - e.start} session(s) from "
              f"{short(s.sessions[e.start].commit)}, back after: not a change point"
              for s in site.series for e in s.excursions]
    if notes:
        lines += ["## To watch", "", *notes, ""]
    header = "| Chip | Model | Case | Metric | Sessions | Change points |" + (" Plot |" if png else "")
    lines += ["## Series", "", header,
              "|---|---|---|---|---|---|" + ("---|" if png else "")]
    for s in sorted(site.series, key=lambda s: s.key):
        found = "; ".join(f"{'REGRESSION' if cp.regression else 'improvement'} {cp.change * 100:+.1f}% between "
                          f"{short(cp.commits[0])} and {short(cp.commits[1])}" for cp in s.change_points)
        name = names[(s.chip, s.model, s.case)]
        plot = f" [PNG]({prefix}{name}-{metric_slug(s.metric)}.png) |" if png else ""
        lines.append(f"| {s.chip} | {s.model} | `{display_case(s.case)}` | {METRICS[s.metric].label} | "
                     f"{len(s.sessions)} | {found or s.note or 'none'} |{plot}")
    return "\n".join(lines) + "\n"


def build(records: Sequence[dict[str, Any]], out: Path, *, repository: str | None = None, png: bool = True,
          base_url: str = "", dashboard_url: str = "", source: str = "", progress: Progress | None = None,
          metrics: Sequence[str] = REPORTED_METRICS, work_lines: Sequence[str] = ()) -> Site:
    """Analyse a history and write its site into ``out``; ``progress`` gets a line per stage;
    ``work_lines`` are the exact changes of work profiles (one line each) for both summaries;
    ``base_url``/``dashboard_url``: where report.md's links point (``markdown``)."""
    say = progress or (lambda line: None)

    def searched(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            say(f"change points: {done}/{total} series")

    all_series = analyse(records, metrics, progress=searched)
    site = Site(all_series, new_regressions(all_series), sessions=len(records), work_lines=list(work_lines))
    link = commit_links(repository or recorded_repository(records))
    names = page_names(all_series)
    groups: dict[tuple[str, str, str], list[Series]] = defaultdict(list)
    for s in sorted(all_series, key=lambda s: (s.key[:3], REPORTED_METRICS.index(s.metric)
                                               if s.metric in REPORTED_METRICS else 99)):
        groups[(s.chip, s.model, s.case)].append(s)

    def write(relative: str, text: str) -> None:
        path = out / relative
        atomic_write_text(path, text)
        site.files.append(path)

    for done, (key, group) in enumerate(sorted(groups.items()), 1):
        write(names[key] + ".html", case_page(group, names[key], link, png))
        if done == len(groups) or done % max(1, len(groups) // 10) == 0:
            say(f"pages: {done}/{len(groups)} cases")
    if png:
        from .plots import plot

        total = len(all_series)
        for done, s in enumerate(sorted(all_series, key=lambda s: s.key), 1):
            path = out / f"{names[(s.chip, s.model, s.case)]}-{metric_slug(s.metric)}.png"
            plot(s, path, _series_title(s))
            site.files.append(path)
            if done == total or done % max(1, total // 10) == 0:
                say(f"plots: {done}/{total} PNGs")
    write("report.csv", csv_text(all_series))
    write("report.md", markdown(site, names, png, base_url, dashboard_url))
    write("index.html", index_page(site, names, link, source))
    return site
