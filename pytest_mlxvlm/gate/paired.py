"""The paired A/B decision: base and head rounds that took turns or ran at once, judged pair by pair.

Two estimators of the change, signed so that positive means the head is worse:

- ``fast``: the fast end of each side, the 90th percentile of tok/s (the 10th
  of times and memory), as a log ratio, with a paired bootstrap interval (pairs resampled
  together, so the drift shared by a pair stays shared). A busy host only ever slows a round,
  so the fast end is what the code can do; on a GPU whose launch path flips between a fast
  and a slow mode it is the only estimator that sees a 5% slowdown in 40 pairs
  (``docs/ab-estimators.md``).
- ``median`` (the default): the Hodges-Lehmann estimate of the per-pair log ratios with the interval of the
  Wilcoxon signed-rank test.

A metric regressed when the head is significantly worse (the interval's lower end above zero)
*and* the estimate is worse than the tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median
from typing import Sequence

from ..results import METRICS, MetricComparison

POWER = 0.8
METHODS = {
    "fast": "fast end (q90 of tok/s, q10 of times), paired bootstrap",
    "median": "paired Wilcoxon signed-rank, Hodges-Lehmann",
}
RESAMPLES = 2000
INCONCLUSIVE_HALF_WIDTH = 0.08  # a tok/s interval wider than this at the end settles nothing



def worse_log_ratios(metric: str, base: Sequence[float], head: Sequence[float]) -> list[float]:
    """Per pair, log(head / base) signed so that positive is worse for this metric."""
    higher = METRICS[metric].better == "higher"
    out = []
    for b, h in zip(base, head):
        if b <= 0 or h <= 0:
            out.append(0.0 if b == h else (math.inf if (h < b) == higher else -math.inf))
            continue
        ratio = math.log(h / b)
        out.append(-ratio if higher else ratio)
    return out


@dataclass(frozen=True)
class Estimate:
    """A change in log units, positive = worse, with a two-sided interval and a p-value."""

    n: int
    estimate: float
    low: float
    high: float
    p_worse: float  # one-sided: the head is worse
    p_better: float
    se: float  # standard error of the estimate (log units)
    base_value: float | None = None  # the values compared, where not the medians (the fast end)
    head_value: float | None = None


def _walsh(d: Sequence[float]) -> list[float]:
    return sorted((d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d)))


EXACT_BELOW = 20  # pairs: below this the signed-rank statistic's exact distribution sets the interval


def _exact_critical(n: int, alpha: float) -> int:
    """The largest t with P(T <= t) <= alpha for Wilcoxon's signed-rank statistic of n pairs
    (exact, no ties): the interval's bounds are the Walsh averages t from each end; -1 when even
    T = 0 (p = 1/2^n) is not significant."""
    counts = [1] + [0] * (n * (n + 1) // 2)  # subsets of the ranks 1..n by their sum
    for rank in range(1, n + 1):
        for total in range(len(counts) - 1, rank - 1, -1):
            counts[total] += counts[total - rank]
    cumulative, critical = 0, -1
    for t, count in enumerate(counts):
        cumulative += count
        if cumulative / 2 ** n > alpha:
            break
        critical = t
    return critical


def estimate(d: Sequence[float], alpha: float) -> Estimate:
    """Hodges-Lehmann estimate of the log ratios and its (1 - 2 alpha) interval (so each
    side is a one-sided bound at ``alpha``), with one-sided Wilcoxon p-values."""
    n = len(d)
    finite = [x for x in d if math.isfinite(x)]
    if n == 0:
        return Estimate(0, 0.0, -math.inf, math.inf, 1.0, 1.0, 0.0)
    mid = median(finite) if finite else 0.0
    spread = 1.4826 * median(abs(x - mid) for x in finite) if finite else 0.0
    se = spread * math.sqrt(math.pi / 3) / math.sqrt(n)  # Wilcoxon's efficiency 3/pi
    if len(set(d)) == 1:  # a deterministic metric (token counts, often peak memory)
        x = d[0]
        return Estimate(n, x, x, x, 0.0 if x > 0 else 1.0, 0.0 if x < 0 else 1.0, 0.0)
    from scipy import stats as sps

    walsh = _walsh([x if math.isfinite(x) else math.copysign(10.0, x) for x in d])
    m = len(walsh)
    if n < EXACT_BELOW:
        k = _exact_critical(n, alpha)
    else:
        z = float(sps.norm.ppf(1 - alpha))
        k = math.floor(m / 2 - z * math.sqrt(n * (n + 1) * (2 * n + 1) / 24))
    if k < 0:  # too few pairs for any interval at this alpha (4 pairs: p >= 1/16): nothing is ruled out
        low, high = -math.inf, math.inf
    else:
        k = min(k, (m - 1) // 2)
        low, high = walsh[k], walsh[m - 1 - k]
    if all(x == 0 for x in d):
        p_worse = p_better = 1.0
    else:
        p_worse = float(sps.wilcoxon(d, alternative="greater", zero_method="zsplit").pvalue)
        p_better = float(sps.wilcoxon(d, alternative="less", zero_method="zsplit").pvalue)
    return Estimate(n, median(walsh), low, high, p_worse, p_better, se)


def estimate_fast(metric: str, base: Sequence[float], head: Sequence[float], alpha: float) -> Estimate:
    """The fast end of each side (q90 of tok/s, q10 of times) as a log ratio, positive =
    worse, with a paired bootstrap interval (so each side is a one-sided bound at ``alpha``)
    and one-sided bootstrap p-values. Seeded: the same rounds give the same verdict."""
    import numpy as np

    n = len(base)
    higher = METRICS[metric].better == "higher"
    b = np.log(np.maximum(np.asarray(base, dtype=float), 1e-300))
    h = np.log(np.maximum(np.asarray(head, dtype=float), 1e-300))
    if n == 0:
        return Estimate(0, 0.0, -math.inf, math.inf, 1.0, 1.0, 0.0)
    q = 90 if higher else 10
    sign = 1.0 if higher else -1.0  # worse = slower tok/s, longer times
    b_end, h_end = float(np.percentile(b, q)), float(np.percentile(h, q))
    point = sign * (b_end - h_end)
    ends = {"base_value": math.exp(b_end), "head_value": math.exp(h_end)}
    if np.ptp(b) == 0 and np.ptp(h) == 0:
        return Estimate(n, point, point, point, 0.0 if point > 0 else 1.0, 0.0 if point < 0 else 1.0, 0.0,
                        **ends)
    index = np.random.default_rng(20261127).integers(0, n, size=(RESAMPLES, n))
    boot = sign * (np.percentile(b[index], q, axis=1) - np.percentile(h[index], q, axis=1))
    low, high = (float(v) for v in np.quantile(boot, [alpha, 1 - alpha]))
    p_worse = float((np.sum(boot <= 0) + 1) / (RESAMPLES + 1))
    p_better = float((np.sum(boot >= 0) + 1) / (RESAMPLES + 1))
    return Estimate(n, point, min(low, point), max(high, point), p_worse, p_better, float(boot.std()),
                    **ends)


def detectable(se: float, n: int, tolerance: float, alpha: float) -> float | None:
    """The smallest worsening (relative) these pairs catch with 80% power: beyond the
    tolerance by the estimate's noise, and significant at ``alpha``."""
    if n < 2:
        return None
    from scipy import stats as sps

    z_power = float(sps.norm.ppf(POWER))
    log_effect = max(math.log1p(tolerance) + z_power * se, (float(sps.norm.ppf(1 - alpha)) + z_power) * se)
    return math.expm1(log_effect)


def compare_paired(metric: str, base: Sequence[float], head: Sequence[float], tolerance: float,
                   alpha: float, method: str = "fast") -> MetricComparison:
    """One metric of the head against the base, from pairs of rounds (taking turns or at once)."""
    if method == "fast":
        est = estimate_fast(metric, base, head, alpha)
    else:
        est = estimate(worse_log_ratios(metric, base, head), alpha)
    worse = math.expm1(est.estimate)
    higher = METRICS[metric].better == "higher"
    limit = math.log1p(tolerance)
    if est.low > 0 and est.estimate > limit:
        verdict, p = "regressed", est.p_worse
    elif est.high < 0 and -est.estimate > limit:
        verdict, p = "improved", est.p_better
    else:
        verdict, p = "ok", est.p_worse
    if est.base_value is not None and est.head_value is not None:  # the fast end was compared
        b_med, h_med = est.base_value, est.head_value
    else:
        b_med, h_med = float(median(base)), float(median(head))
    return MetricComparison(
        metric=metric,
        baseline=b_med,
        current=h_med,
        change=-worse if higher else worse,  # signed change of the metric itself, head vs base
        tolerance=tolerance,
        p_value=p,
        verdict=verdict,
        n_baseline=len(base),
        n_current=len(head),
        detectable=detectable(est.se, est.n, tolerance, alpha),
        interval=(sorted([_signed(est.low, higher), _signed(est.high, higher)])
                  if math.isfinite(est.low) and math.isfinite(est.high) else None),  # None: too few pairs for one
        method=METHODS[method],
    )


def _signed(log_worse: float, higher: bool) -> float:
    """A worse-by log bound as a signed relative change of the metric."""
    worse = math.expm1(max(-10.0, min(10.0, log_worse)))
    return -worse if higher else worse


def worse_bounds(comparison: MetricComparison) -> tuple[float, float]:
    """The interval as "worse by" (positive = worse), low to high."""
    low, high = comparison.interval or [-math.inf, math.inf]
    higher = METRICS[comparison.metric].better == "higher"
    return (-high, -low) if higher else (low, high)


def settled(comparisons: Sequence[MetricComparison]) -> bool:
    """Is the answer clear: one metric's whole interval above its tolerance (the case fails
    whatever comes next), or every interval below its tolerance (no regression of that size)?"""
    bounds = [(worse_bounds(m), m.tolerance) for m in comparisons]
    return (any(low > tol for (low, _), tol in bounds)
            or all(high < tol for (_, high), tol in bounds))


def inconclusive(comparison: MetricComparison) -> bool:
    """A tok/s metric that did not regress, but whose interval is too wide to say anything about
    a few percent and still reaches past the tolerance: a regression was not ruled out."""
    if METRICS[comparison.metric].unit != "tok/s":
        return False
    if not comparison.interval:  # too few pairs for any interval: nothing was ruled out
        return comparison.verdict != "regressed"
    low, high = comparison.interval
    return (high - low) / 2 > INCONCLUSIVE_HALF_WIDTH and worse_bounds(comparison)[1] >= comparison.tolerance


SETTLE_LIMIT = 10  # more than this many times the pairs measured: "more pairs are unlikely to settle it"


def pairs_to_settle(m: MetricComparison) -> float | None:
    """The pairs in all that would likely settle an inconclusive metric, assuming its interval
    narrows as 1/sqrt(pairs) around the same estimate: until it is within ±8% or clear of the
    tolerance, whichever comes first. None when the estimate sits on the tolerance."""
    low, high = worse_bounds(m)
    est = m.worse_by
    if not (math.isfinite(low) and math.isfinite(high)) or m.n_current < 2:
        return None
    factors = [(high - low) / 2 / INCONCLUSIVE_HALF_WIDTH]
    if est < m.tolerance and high > est:
        factors.append((high - est) / (m.tolerance - est))
    elif est > m.tolerance and est > low:
        factors.append((est - low) / (est - m.tolerance))
    factor = min(factors)
    return m.n_current * max(factor, 1.0) ** 2 if factor > 0 else None


def more_pairs(metrics: Sequence[MetricComparison]) -> int | None:
    """More pairs (beyond those measured) that would likely settle every inconclusive metric;
    None when that is beyond ``SETTLE_LIMIT`` times the pairs measured, or unknown."""
    needed = [pairs_to_settle(m) for m in metrics if inconclusive(m)]
    if not needed or any(n is None for n in needed):
        return None
    n = max(m.n_current for m in metrics)
    total = math.ceil(max(needed))  # type: ignore[type-var]
    return total - n if total <= SETTLE_LIMIT * n else None


def format_interval(m: MetricComparison) -> str:
    """``Decode -5.7% [-14.9%, +2.4%]``."""
    return f"{METRICS[m.metric].label} {m.change * 100:+.1f}% {interval_text(m)}"


def interval_text(m: MetricComparison) -> str:
    """``[-14.9%, +2.4%]``, or ``[no interval: too few pairs]``."""
    if not m.interval:
        return "[no interval: too few pairs]"
    low, high = m.interval
    return f"[{low * 100:+.1f}%, {high * 100:+.1f}%]"


def format_change(m: MetricComparison) -> str:
    """``Decode -5.7% [-8.9%, -2.4%], p=0.003, 40 pairs``."""
    label = METRICS[m.metric].label
    p = f"p={m.p_value:.2g}" if m.p_value is not None else "p=n/a"
    return f"{label} {m.change * 100:+.1f}% {interval_text(m)}, {p}, {m.n_current} pairs"
