"""Change points in a history: one series per chip, model, case and metric.

ruptures' kernel change-point search (PELT with a minimum segment, on the log of the session
medians; linear kernel, the L2 cost, in C) proposes level shifts in time near-linear in the
history's length. A proposal is called a change point only when it is confirmed:

- the change is larger than the metric's tolerance;
- the new level holds: each of the first ``HOLD`` sessions after it lies past the midpoint
  between the two levels (one odd session is never a change point);
- the sessions' samples on its two sides differ by a Mann-Whitney test (p < alpha), within a
  window of ``WINDOW`` sessions each side (session medians where a history kept no samples);
- a short level that comes back (an *excursion*: ``HOLD`` sessions or fewer, after which the
  series returns to within the tolerance of where it was) is reported as such, not as two
  change points: a busy machine for a night or two;
- a session that is off the levels of both its sides where those agree (a *spike*) is left out
  of the search and shown as an outlier.

The weakest unconfirmed proposal is dropped and the rest judged again on the merged segments.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ..config.tolerances import DEFAULT_TOLERANCES
from ..results import METRICS

REPORTED_METRICS: tuple[str, ...] = ("end_to_end_tps", "generation_tps", "ttft_s")
MIN_POINTS = 6  # sessions a series needs before change points are looked for
HOLD = 2  # sessions a new level must hold for: the shortest segment the search proposes
WINDOW = 30  # sessions each side of a proposal that judge it: bounded work on a long history
SHIFT = 4  # sessions the best samples may move a proposed change point by
PENALTY = 3.0  # per change point, times log(sessions), in units of the session-to-session noise
ALPHA = 0.05


@dataclass(frozen=True)
class Session:
    """One session's figures in one series."""

    date: str
    commit: str | None
    median: float
    samples: tuple[float, ...] = ()

    def quartiles(self) -> tuple[float, float] | None:
        """The first and third quartiles of the samples (None below two samples)."""
        if len(self.samples) < 2:
            return None
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q1, q3


@dataclass
class ChangePoint:
    """A confirmed level shift: between the sessions ``last_before`` and ``index``."""

    index: int  # first session of the new level
    last_before: int  # last session of the old level (``index - 1`` unless outliers lie between)
    before: float  # median of the session medians before (within the window)
    after: float  # and after
    change: float  # relative, signed
    regression: bool
    p_value: float
    test: str  # "samples" or "session medians": what the Mann-Whitney test compared
    commits: tuple[str | None, str | None]  # last commit before, first commit after
    dates: tuple[str, str]


@dataclass
class Excursion:
    """A level that lasted a session or two and came back: reported, not a change point."""

    start: int
    end: int  # first session back at the old level
    change: float


@dataclass
class Series:
    """The sessions of one chip, model, case and metric, and what the search found in them."""

    chip: str
    model: str
    case: str
    metric: str
    sessions: list[Session] = field(default_factory=list)
    change_points: list[ChangePoint] = field(default_factory=list)
    excursions: list[Excursion] = field(default_factory=list)
    outliers: list[int] = field(default_factory=list)
    note: str = ""  # why nothing was looked for
    watch: str = ""  # the newest session is off the current level: one more will tell

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.chip, self.model, self.case, self.metric

    @property
    def medians(self) -> list[float]:
        return [s.median for s in self.sessions]

    @property
    def tolerance(self) -> float:
        return DEFAULT_TOLERANCES.get(self.metric, 0.10)

    def levels(self) -> list[tuple[int, int, float]]:
        """(first session, end, median level) of each segment between change points."""
        bounds = [0] + [cp.index for cp in self.change_points] + [len(self.sessions)]
        skip = set(self.outliers)
        found = []
        for start, end in zip(bounds, bounds[1:]):
            kept = [self.sessions[i].median for i in range(start, end) if i not in skip]
            if kept:
                found.append((start, end, statistics.median(kept)))
        return found


def case_name(case: dict[str, Any]) -> str:
    return str(case.get("case_key") or case.get("resolution"))


def build_series(records: Iterable[dict[str, Any]], metrics: Sequence[str] = REPORTED_METRICS) -> list[Series]:
    """One series per chip, model, case and metric, sessions in date order; chips never mix."""
    table: dict[tuple[str, str, str, str], Series] = {}
    for rec in sorted(records, key=lambda r: r.get("date", "")):
        chip = rec["machine"].get("key") or "unknown"
        for case in rec["cases"]:
            medians = case.get("medians") or {}
            samples = case.get("samples") or {}
            for metric in metrics:
                value = medians.get(metric)
                if value is None:
                    continue
                key = (chip, case["model"], case_name(case), metric)
                series = table.get(key)
                if series is None:
                    series = table[key] = Series(*key)
                series.sessions.append(Session(rec.get("date", ""), rec.get("commit"), float(value),
                                               tuple(float(v) for v in samples.get(metric) or ())))
    return list(table.values())


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spikes(medians: Sequence[float], tolerance: float, higher: bool) -> list[int]:
    """Sessions worse than both neighbouring levels by more than the tolerance where those two
    levels (the two sessions before and the two after) agree: a busy machine for one session.
    A session better than both is not one: noise does not make code faster."""
    found = []
    sign = -1 if higher else 1  # the direction of worse
    for i in range(1, len(medians) - 1):
        left, right = medians[max(0, i - 2):i], medians[i + 1:i + 3]
        before, after = sum(left) / len(left), sum(right) / len(right)
        if not before or not after or abs(after / before - 1) > tolerance:
            continue  # the neighbourhood itself moves: a step, not a spike
        worse = min(sign * (medians[i] / before - 1), sign * (medians[i] / after - 1))
        if worse > tolerance:
            found.append(i)
    return found


def propose(medians: Sequence[float], penalty: float = PENALTY) -> list[int]:
    """Level shifts by ruptures' kernel search (linear kernel: the L2 cost on log medians,
    scaled by the session-to-session noise), no segment shorter than ``HOLD``."""
    import numpy as np
    import ruptures as rpt

    signal = np.log(np.clip(np.asarray(medians, dtype=float), 1e-12, None))
    scale = float(np.median(np.abs(np.diff(signal)))) or 1e-6
    search = rpt.KernelCPD(kernel="linear", min_size=HOLD, jump=1).fit((signal / scale).reshape(-1, 1))
    return [int(b) for b in search.predict(pen=penalty * math.log(len(signal)))[:-1]]


@dataclass
class _Verdict:
    index: int  # where the new level starts, after the location is refined
    before: float
    after: float
    change: float
    holds: bool
    p_value: float
    test: str

    def confirmed(self, tolerance: float, alpha: float) -> bool:
        return self.holds and abs(self.change) > tolerance and self.p_value < alpha


def best(session: Session, higher: bool) -> float:
    """A session's best sample (its median without samples): machine noise only ever makes a
    sample worse, so the best one shows the level the code allows."""
    if not session.samples:
        return session.median
    return max(session.samples) if higher else min(session.samples)


def _refine(bests: Sequence[float], cut: int, higher: bool, regression: bool) -> int:
    """Where the new level starts, from the sessions' best samples (positions in ``bests``),
    at most ``SHIFT`` sessions from the proposal. Noise only makes sessions worse, so a session
    whose best sample lies on the better side of the midpoint between the two levels cannot be
    noise on the worse level: for a regression the new level starts after the last such session,
    for an improvement at the first such session on the new side."""
    old, new = _median(bests[:cut]), _median(bests[cut:])
    midpoint = math.sqrt(old * new) if old > 0 and new > 0 else (old + new) / 2
    low, high = max(1, cut - SHIFT), min(len(bests), cut + SHIFT)  # the places it may start
    better = [(b > midpoint) == higher for b in bests]  # on the better side of the midpoint
    if regression:  # (a session of the old level among the last of the window leaves too few after)
        return max((i for i in range(low - 1, high) if better[i]), default=low - 1) + 1
    return next((i for i in range(low, high) if better[i]), cut)


def _judge(sessions: Sequence[Session], cuts: Sequence[int], k: int, higher: bool) -> _Verdict:
    """Cut ``k`` against the segments beside it (as the cuts stand), within the window: its
    location refined by the best samples, then its change, whether it holds, and its test."""
    from scipy.stats import mannwhitneyu

    cut = cuts[k]
    start = max(cuts[k - 1] if k else 0, cut - WINDOW)
    end = min(cuts[k + 1] if k + 1 < len(cuts) else len(sessions), cut + WINDOW)
    window = sessions[start:end]
    level = _median([s.median for s in window[:cut - start]])
    proposed_change = _median([s.median for s in window[cut - start:]]) / level - 1 if level else 0.0
    regression = proposed_change < 0 if higher else proposed_change > 0
    split = _refine([best(s, higher) for s in window], cut - start, higher, regression)
    left, right = window[:split], window[split:]
    if not left or len(right) < HOLD:
        return _Verdict(start + split, 0.0, 0.0, 0.0, False, 1.0, "none")
    before = _median([s.median for s in left])
    after = _median([s.median for s in right])
    change = after / before - 1 if before else 0.0
    midpoint = math.sqrt(before * after) if before > 0 and after > 0 else (before + after) / 2
    down = after < before
    holds = all((s.median < midpoint) == down for s in right[:HOLD])
    if all(s.samples for s in window):
        a = [v for s in left for v in s.samples]
        b = [v for s in right for v in s.samples]
        test = "samples"
    else:
        a, b = [s.median for s in left], [s.median for s in right]
        test = "session medians"
    p_value = 1.0 if len(set(a) | set(b)) == 1 else float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return _Verdict(start + split, before, after, change, holds, p_value, test)


def detect(series: Series, tolerance: float | None = None, penalty: float = PENALTY,
           alpha: float = ALPHA) -> None:
    """Fill in the series' change points, excursions, outliers and notes."""
    tolerance = series.tolerance if tolerance is None else tolerance
    n = len(series.sessions)
    if n < MIN_POINTS:
        series.note = f"{n} sessions: too few to look for change points (need {MIN_POINTS})"
        return
    higher = METRICS[series.metric].better == "higher"
    series.outliers = spikes(series.medians, tolerance, higher)
    skip = set(series.outliers)
    kept = [i for i in range(n) if i not in skip]  # positions in the series of the searched sessions
    sessions = [series.sessions[i] for i in kept]
    cuts = propose([s.median for s in sessions], penalty)
    verdicts: list[_Verdict] = []
    while cuts:
        verdicts = [_judge(sessions, cuts, k, higher) for k in range(len(cuts))]
        excursion = next((k for k in range(len(cuts) - 1) if cuts[k + 1] - cuts[k] <= HOLD
                          and abs(verdicts[k].change) > tolerance  # away and back, beyond the noise
                          and verdicts[k].before > 0 and verdicts[k + 1].after > 0
                          and abs(verdicts[k + 1].after / verdicts[k].before - 1) <= tolerance), None)
        if excursion is not None:
            series.excursions.append(Excursion(kept[cuts[excursion]], kept[cuts[excursion + 1]],
                                               verdicts[excursion].change))
            del cuts[excursion:excursion + 2]
            continue
        weak = [k for k, v in enumerate(verdicts) if not v.confirmed(tolerance, alpha)]
        if not weak:
            break
        cuts.pop(min(weak, key=lambda k: (verdicts[k].holds, abs(verdicts[k].change) > tolerance,
                                          -verdicts[k].p_value, abs(verdicts[k].change))))
    if not cuts:
        verdicts = []
    placed: set[int] = set()
    for v in sorted(verdicts, key=lambda v: v.index):
        if v.index in placed:
            continue
        placed.add(v.index)
        index, last_before = kept[v.index], kept[v.index - 1]
        first, last = series.sessions[index], series.sessions[last_before]
        series.change_points.append(ChangePoint(
            index=index, last_before=last_before, before=v.before, after=v.after, change=v.change,
            regression=v.change < 0 if higher else v.change > 0, p_value=v.p_value, test=v.test,
            commits=(last.commit, first.commit), dates=(last.date, first.date)))
    series.excursions.sort(key=lambda e: e.start)
    _watch(series, tolerance)


def _watch(series: Series, tolerance: float) -> None:
    """A note when the newest session is off its level by more than the tolerance."""
    levels = series.levels()
    if not levels or len(series.sessions) < 2:
        return
    start, end, level = levels[-1]
    newest = series.sessions[-1]
    if end - start < 2 or not level:
        return
    off = newest.median / level - 1
    if abs(off) > tolerance:
        series.watch = (f"the newest session ({short(newest.commit)}, {newest.date[:10]}) is "
                        f"{off * 100:+.0f}% off the level: not a change point until a second "
                        "session confirms it")


def short(commit: str | None) -> str:
    """A commit as people write it: its first 7 characters, or ``?``."""
    return (commit or "?")[:7] if commit and len(commit) >= 12 else (commit or "?")


def analyse(records: Iterable[dict[str, Any]], metrics: Sequence[str] = REPORTED_METRICS,
            progress: Any = None) -> list[Series]:
    """Every series of a history with its change points; ``progress(done, total)`` as it goes."""
    all_series = build_series(records, metrics)
    for done, series in enumerate(all_series, 1):
        detect(series)
        if progress is not None:
            progress(done, len(all_series))
    return all_series


def new_regressions(all_series: Sequence[Series]) -> list[tuple[Series, ChangePoint]]:
    """Series whose newest change point is a regression."""
    return [(s, s.change_points[-1]) for s in all_series if s.change_points and s.change_points[-1].regression]
