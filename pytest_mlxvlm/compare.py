"""The gate's decision: a regression is a change beyond tolerance that is also significant."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Any, Sequence

import numpy as np
from scipy import stats as sps

from .runner import METRICS

# Relative tolerances; the metrics listed here are gated by default.
DEFAULT_TOLERANCES: dict[str, float] = {
    "end_to_end_tps": 0.10,
    "generation_tps": 0.10,
    "ttft_s": 0.15,
    "peak_memory": 0.05,
}
DEFAULT_ALPHA = 0.05
POWER = 0.8
EXACT_METRICS = tuple(name for name, m in METRICS.items() if m.better == "exact")
WORKLOAD_KEYS = ("prompt", "max_tokens", "image")


class ToleranceError(ValueError):
    """A tolerance setting that cannot be parsed."""


def parse_tolerances(entries: Sequence[str]) -> dict[str, float | None]:
    """``["ttft_s=20", "peak_memory=off"]`` -> ``{"ttft_s": 0.2, "peak_memory": None}``."""
    out: dict[str, float | None] = {}
    for entry in entries:
        for item in str(entry).replace(",", " ").split():
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or name not in METRICS or name in EXACT_METRICS:
                gated = [n for n in METRICS if n not in EXACT_METRICS]
                raise ToleranceError(
                    f"bad tolerance {item!r}: write METRIC=PERCENT or METRIC=off, "
                    f"METRIC one of {', '.join(gated)}"
                )
            if value.strip().lower() == "off":
                out[name] = None
                continue
            try:
                pct = float(value.strip().rstrip("%"))
            except ValueError:
                raise ToleranceError(f"bad tolerance {item!r}: {value!r} is not a percentage") from None
            if not 0 <= pct < 1000:
                raise ToleranceError(f"bad tolerance {item!r}: percent must be between 0 and 1000")
            out[name] = pct / 100
    return out


def merge_tolerances(*layers: dict[str, float | None]) -> dict[str, float]:
    """Defaults overridden by each layer in turn; ``None`` switches a metric off."""
    merged: dict[str, float | None] = dict(DEFAULT_TOLERANCES)
    for layer in layers:
        merged.update(layer)
    return {k: v for k, v in merged.items() if v is not None}


@dataclass
class MetricComparison:
    """One metric of one case against its baseline."""

    metric: str
    baseline: float
    current: float
    change: float  # (current - baseline) / baseline, signed
    tolerance: float
    p_value: float | None
    verdict: str  # "ok", "regressed", "improved"
    n_baseline: int
    n_current: int
    detectable: float | None  # smallest regression these sample sizes and spread can detect
    sessions: int = 1  # sessions behind the baseline
    drift: float | None = None  # session-to-session spread of the baseline (log sd)
    allowed: float = 0.0  # the change the baseline's own drift allows (prediction interval)
    drift_alpha: float | None = None  # the level of the drift allowance (family-wise share)

    @property
    def worse_by(self) -> float:
        """The change in the bad direction (positive = worse)."""
        return -self.change if METRICS[self.metric].better == "higher" else self.change

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricComparison:
        from .runner import from_fields

        return from_fields(cls, data)


def _relative_change(base: float, cur: float) -> float:
    return (cur - base) / base if base else (0.0 if cur == base else math.inf)


def _p_shift(metric: str, base: Sequence[float], cur: Sequence[float], worse: bool) -> float:
    """One-sided Mann-Whitney U: the chance of a shift this far (towards worse, or better)."""
    higher = METRICS[metric].better == "higher"
    lower_now = worse == higher  # worse for a higher-is-better metric means smaller values
    if len(set(base)) == 1 and len(set(cur)) == 1:
        # Deterministic metric: any difference is real.
        moved = cur[0] < base[0] if lower_now else cur[0] > base[0]
        return 0.0 if moved else 1.0
    alternative = "less" if lower_now else "greater"
    return float(sps.mannwhitneyu(cur, base, alternative=alternative).pvalue)


def min_p_value(n_a: int, n_b: int) -> float:
    """The smallest one-sided p-value an exact Mann-Whitney test can reach."""
    return 1.0 / math.comb(n_a + n_b, n_a)


def relative_noise(*sample_sets: Sequence[float]) -> float:
    """Pooled robust relative spread: 1.4826 x MAD / median of each set, root-mean-squared."""
    parts = []
    for samples in sample_sets:
        data = np.asarray(samples, dtype=float)
        med = float(np.median(data))
        if data.size > 1 and med:
            mad = float(sps.median_abs_deviation(data, scale="normal"))
            parts.append((mad / med) ** 2)
    return math.sqrt(sum(parts) / len(parts)) if parts else 0.0


def detectable_regression(
    n_baseline: int, n_current: int, noise: float, tolerance: float, alpha: float
) -> float | None:
    """Smallest relative regression the gate catches with 80% power; None if none can be.

    A shift-in-location approximation: (z(1-alpha) + z(power)) x noise x sqrt(1/n + 1/m),
    scaled by sqrt(pi/3) for the Mann-Whitney test's efficiency, and never below the tolerance.
    """
    if min(n_baseline, n_current) < 1 or min_p_value(n_baseline, n_current) >= alpha:
        return None
    z = sps.norm.ppf(1 - alpha) + sps.norm.ppf(POWER)
    effect = z * noise * math.sqrt(1 / n_baseline + 1 / n_current) * math.sqrt(math.pi / 3)
    return max(tolerance, effect)


def per_comparison_alpha(alpha: float, comparisons: int) -> float:
    """The level of each of a session's drift allowances, so that a session of unchanged code
    fails on drift with chance at most ``alpha`` (Bonferroni over its ``comparisons``).

    A regression needs the drift allowance exceeded *and* the other conditions, so bounding
    the chance of the first bounds the session's false alarms."""
    return alpha / max(1, comparisons)


def drift_allowance(session_medians: Sequence[float], alpha: float, higher: bool) -> tuple[float | None, float]:
    """How far one new session's median may fall from the baseline sessions by drift alone.

    A one-sided prediction interval on log medians: t(1-alpha, K-1) x sd x sqrt(1 + 1/K)
    for K baseline sessions; returned as (sd of log medians, allowed relative change).
    Needs K >= 2; with one session the drift is unknown and (None, 0.0) is returned.
    """
    k = len(session_medians)
    if k < 2 or min(session_medians) <= 0:
        return None, 0.0
    logs = np.log(np.asarray(session_medians, dtype=float))
    sd = float(logs.std(ddof=1))
    bound = float(sps.t.ppf(1 - alpha, k - 1)) * sd * math.sqrt(1 + 1 / k)
    allowed = 1 - math.exp(-bound) if higher else math.exp(bound) - 1
    return sd, allowed


def compare_metric(
    metric: str,
    base: Sequence[float] | Sequence[Sequence[float]],
    cur: Sequence[float],
    tolerance: float,
    alpha: float = DEFAULT_ALPHA,
    reference: bool = False,
    drift_alpha: float | None = None,
) -> MetricComparison:
    """Compare one metric's samples against the baseline's.

    ``base`` is a list of samples, or a list of sessions' samples. Regressed: worse by more
    than the tolerance and than the baseline sessions' own drift allows (a prediction
    interval over their medians at ``drift_alpha``, default ``alpha``), and, unless the
    baseline is a single published reference figure, significant (one-sided Mann-Whitney
    p < ``alpha`` against all baseline samples).
    """
    drift_alpha = alpha if drift_alpha is None else drift_alpha
    sessions = [list(g) for g in base] if base and isinstance(base[0], (list, tuple)) else [list(base)]
    pooled = [v for g in sessions for v in g]
    session_medians = [float(median(g)) for g in sessions]
    higher = METRICS[metric].better == "higher"
    b_med = float(median(session_medians)) if len(sessions) > 1 else float(median(pooled))
    c_med = float(median(cur))
    change = _relative_change(b_med, c_med)
    worse_by = -change if higher else change
    drift, allowed = (None, 0.0) if reference else drift_allowance(session_medians, drift_alpha, higher)
    limit = max(tolerance, allowed)
    if reference:
        p_worse = p_better = None
        significant_worse = significant_better = True
    else:
        p_worse, p_better = _p_shift(metric, pooled, cur, True), _p_shift(metric, pooled, cur, False)
        significant_worse, significant_better = p_worse < alpha, p_better < alpha
    if worse_by > limit and significant_worse:
        verdict, p = "regressed", p_worse
    elif -worse_by > limit and significant_better:
        verdict, p = "improved", p_better
    else:
        verdict, p = "ok", p_worse
    noise = relative_noise(pooled, cur)
    detectable = None if reference else detectable_regression(
        len(pooled), len(cur), noise, limit, alpha
    )
    return MetricComparison(
        metric=metric,
        baseline=b_med,
        current=c_med,
        change=change,
        tolerance=tolerance,
        p_value=p,
        verdict=verdict,
        n_baseline=len(pooled),
        n_current=len(cur),
        detectable=detectable,
        sessions=len(sessions),
        drift=drift,
        allowed=allowed,
        drift_alpha=drift_alpha if drift is not None else None,
    )


@dataclass
class CaseComparison:
    """All metrics of one case against its baseline, and the verdict."""

    key: str
    status: str  # "pass", "regressed", "improved", "workload-changed", "not-comparable", "new"
    metrics: list[MetricComparison] = field(default_factory=list)
    workload_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    library_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    confirmed: bool | None = None  # for a regression: did the re-measurement confirm it?
    note: str = ""

    @property
    def regressed(self) -> list[MetricComparison]:
        return [m for m in self.metrics if m.verdict == "regressed"]

    @property
    def improved(self) -> list[MetricComparison]:
        return [m for m in self.metrics if m.verdict == "improved"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "status": self.status,
            "confirmed": self.confirmed,
            "note": self.note,
            "workload_changes": {k: list(v) for k, v in self.workload_changes.items()},
            "library_changes": {k: list(v) for k, v in self.library_changes.items()},
            "metrics": [m.to_dict() for m in self.metrics],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseComparison:
        return cls(
            key=data["key"], status=data["status"], confirmed=data.get("confirmed"),
            note=data.get("note", ""),
            metrics=[MetricComparison.from_dict(m) for m in data.get("metrics", [])],
            workload_changes={k: tuple(v) for k, v in data.get("workload_changes", {}).items()},
            library_changes={k: tuple(v) for k, v in data.get("library_changes", {}).items()},
        )


def workload_differences(stored: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Workload settings (prompt, max tokens, image) that differ."""
    return {
        k: (stored.get(k), current.get(k))
        for k in WORKLOAD_KEYS
        if k in stored and stored.get(k) != current.get(k)
    }


def token_differences(
    stored: dict[str, list[float]], current: dict[str, list[float]]
) -> dict[str, tuple[Any, Any]]:
    """Token counts (compared exactly) that differ: a changed workload, not a speed change."""
    out = {}
    for name in EXACT_METRICS:
        if name in stored and name in current:
            before, now = sorted(set(stored[name])), sorted(set(current[name]))
            if before != now:
                out[name] = (_one(before), _one(now))
    return out


def _one(values: list[float]) -> Any:
    ints = [int(v) if float(v).is_integer() else v for v in values]
    return ints[0] if len(ints) == 1 else ints


def library_differences(stored: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Library versions recorded with the baseline that differ now."""
    return {k: (stored[k], current.get(k)) for k in sorted(stored)
            if stored[k] is not None and stored[k] != current.get(k)}
