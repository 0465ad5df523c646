"""Statistics of the gate: significance, detectable effects and the drift of baseline sessions.

scipy and numpy are imported inside the functions that need them, so that importing the
plugin (every pytest start where it is installed) stays cheap.
"""

from __future__ import annotations

import math
from typing import Sequence

POWER = 0.8


def p_shift(base: Sequence[float], cur: Sequence[float], lower_now: bool) -> float:
    """One-sided Mann-Whitney U: the chance of ``cur`` lying this far below (``lower_now``)
    or above ``base``. Two constant sets: 0 if they moved that way, else 1."""
    if len(set(base)) == 1 and len(set(cur)) == 1:
        moved = cur[0] < base[0] if lower_now else cur[0] > base[0]
        return 0.0 if moved else 1.0
    from scipy import stats as sps

    alternative = "less" if lower_now else "greater"
    return float(sps.mannwhitneyu(cur, base, alternative=alternative).pvalue)


def min_p_value(n_a: int, n_b: int) -> float:
    """The smallest one-sided p-value an exact Mann-Whitney test can reach."""
    return 1.0 / math.comb(n_a + n_b, n_a)


def relative_noise(*sample_sets: Sequence[float]) -> float:
    """Pooled robust relative spread: 1.4826 x MAD / median of each set, root-mean-squared."""
    import numpy as np
    from scipy import stats as sps

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
    from scipy import stats as sps

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
    import numpy as np
    from scipy import stats as sps

    logs = np.log(np.asarray(session_medians, dtype=float))
    sd = float(logs.std(ddof=1))
    bound = float(sps.t.ppf(1 - alpha, k - 1)) * sd * math.sqrt(1 + 1 / k)
    allowed = 1 - math.exp(-bound) if higher else math.exp(bound) - 1
    return sd, allowed


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval of the median: the order statistics that the binomial
    distribution puts around it (None when too few values for that confidence)."""
    from scipy import stats as sps

    data = sorted(values)
    n = len(data)
    # the k-th smallest and k-th largest value, k the largest with P(Binomial(n, 1/2) < k) <= alpha/2
    low = int(sps.binom.ppf((1 - confidence) / 2, n, 0.5)) - 1 if n else -1
    if low < 0:
        return None
    return data[low], data[n - 1 - low]


def relative_half_width(values: Sequence[float], confidence: float = 0.95) -> float:
    """Half the width of the median's interval over the median (inf when there is none)."""
    interval = median_interval(values, confidence)
    mid = sorted(values)[len(values) // 2] if values else 0.0
    if interval is None or not mid:
        return math.inf
    return (interval[1] - interval[0]) / 2 / abs(mid)

