"""``pytest-mlxvlm report HISTORY``: the nightly dashboard from a history (a JSON-lines file or
a database), with change points confirmed before they are called, and the exact changes of the
work profile (gate/workhistory.py); exit 1 when a series' newest change point is a regression or
a case's newest work change added work."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence, TextIO
from urllib.parse import urlsplit

from ..reports.store import StoreError, hide_password, open_store

HELP = ("the nightly dashboard (a static site: charts with each session's spread, change points, "
        "dates and commits; a CSV; a Markdown summary) from a --mlx-history file or database, and "
        "the commits at which a case's work profile changed; exit 1 when a series' newest change "
        "point is a regression or a case's newest work change added work")


def add_parser(sub: Any, epilog: str | None = None) -> argparse.ArgumentParser:
    """The ``report`` subcommand and its documented arguments."""
    rep = sub.add_parser("report", help=HELP, description=f"{HELP[0].upper()}{HELP[1:]}.", epilog=epilog)
    rep.add_argument("history", help="the history: a JSON-lines file (--mlx-history PATH), "
                     "sqlite:///FILE.db or postgresql://USER:PASSWORD@HOST/DB")
    rep.add_argument("--out", type=Path, default=Path("mlxvlm-report"),
                     help="folder of the site: index.html, a page per case, report.csv, report.md and "
                     "the PNGs (default: mlxvlm-report)")
    rep.add_argument("--repo-url", default=None, metavar="URL",
                     help="the repository whose commits the sessions name, for links "
                     "(https://github.com/OWNER/REPO, or a template with {commit}); default: the "
                     "repository the history recorded, if any")
    rep.add_argument("--base-url", default="", metavar="URL",
                     help="where the site will be published, so that report.md links work from a "
                     "CI step summary (default: links relative to report.md)")
    rep.add_argument("--dashboard-url", default="", metavar="URL",
                     help="where report.md's Dashboard link points, when index.html is not viewed at "
                     "BASE_URL (a raw-file URL serves the PNGs but shows HTML as text); default: "
                     "BASE_URL/index.html")
    rep.add_argument("--no-png", dest="png", action="store_false",
                     help="skip the PNG plots (the site's charts are SVG; the PNGs are for Markdown)")
    rep.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="a progress line on stderr as the report is built (default: on a terminal)")
    return rep


class Progress:
    """A progress line on stderr: rewritten in place on a terminal, one line per stage otherwise,
    nothing when switched off."""

    def __init__(self, stream: TextIO, enabled: bool | None = None) -> None:
        self.stream = stream
        self.start = time.perf_counter()
        self.tty = stream.isatty()
        self.enabled = self.tty if enabled is None else enabled
        self.last = ""

    def __call__(self, line: str) -> None:
        if not self.enabled:
            return
        text = f"report: {line} ({time.perf_counter() - self.start:.1f} s)"
        if self.tty:
            self.stream.write("\r" + text.ljust(len(self.last)))
        else:
            self.stream.write(text + "\n")
        self.last = text
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.tty and self.last:
            self.stream.write("\n")
            self.stream.flush()


def fail(message: str) -> int:
    print(f"pytest-mlxvlm: {message}", file=sys.stderr)
    return 2


SHOWN_PROBLEMS = 10  # skipped lines named one by one; the rest are counted


def print_problems(problems: Sequence[str]) -> None:
    """Each skipped line of a history on stderr, the first ten by name and the rest counted."""
    for problem in problems[:SHOWN_PROBLEMS]:
        print(f"pytest-mlxvlm: {problem}", file=sys.stderr)
    if len(problems) > SHOWN_PROBLEMS:
        print(f"pytest-mlxvlm: ... and {len(problems) - SHOWN_PROBLEMS} more line(s) skipped",
              file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Read the history, build the site, say what regressed."""
    from ..gate.workhistory import new_work_regressions, work_changes
    from ..reports.dashboard import build
    from ..reports.trends import short
    from ..results import METRICS

    if args.repo_url and urlsplit(args.repo_url).scheme not in ("http", "https"):
        return fail(f"--repo-url {args.repo_url!r}: not a web address; give https://github.com/OWNER/REPO "
                    "or a template with {commit} (https://forge.example/REPO/-/commit/{commit})")
    progress = Progress(sys.stderr, args.progress)
    where = hide_password(str(args.history))
    try:
        history = open_store(args.history).read()
    except OSError as exc:  # StoreError included: it names the store
        return fail(str(exc) if isinstance(exc, StoreError) else f"cannot read {where}: {exc.strerror or exc}")
    print_problems(history.problems)  # each bad line is skipped, the others are reported
    progress(f"read {len(history.records)} sessions from {where}")
    if not history.records:
        progress.done()
        skipped = f" ({len(history.problems)} line(s) skipped)" if history.problems else ""
        return fail(f"no usable session in {where}{skipped}: nothing to report, nothing written")
    work = work_changes(history.records)  # exact: the commit at which a case's work changed
    try:
        site = build(history.records, args.out, repository=args.repo_url, png=args.png,
                     base_url=args.base_url, dashboard_url=args.dashboard_url, source=where, progress=progress,
                     work_lines=[change.line() for change in work])
    except OSError as exc:
        progress.done()
        return fail(f"cannot write the report to {args.out}: {exc.strerror or exc}")
    progress.done()
    changes = sum(len(s.change_points) for s in site.series)
    print(f"report written to {args.out / 'index.html'} ({len(site.series)} series, {changes} change "
          f"point(s); {args.out / 'report.csv'}, {args.out / 'report.md'})")
    for change in work:
        print(change.line())
    for series, cp in site.regressions:
        print(f"new regression: {series.chip} {series.model} {series.case} {METRICS[series.metric].label}: "
              f"{cp.change * 100:+.1f}% between commits {short(cp.commits[0])} and {short(cp.commits[1])}")
    work_regressions = new_work_regressions(work)
    for line in work_regressions:
        print(f"new work regression: {line}")
    return 1 if site.regressions or work_regressions else 0
