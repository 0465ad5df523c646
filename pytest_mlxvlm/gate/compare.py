"""The gate's decision: a regression is a change beyond tolerance that is also significant."""

from __future__ import annotations

import math
from statistics import median
from typing import Any, Sequence

from ..common.stats import detectable_regression, drift_allowance, min_p_value, p_shift, relative_noise
from ..results import EXACT_METRICS, METRICS, MetricComparison

DEFAULT_ALPHA = 0.05
WORKLOAD_KEYS = ("prompt", "max_tokens", "image")


def _relative_change(base: float, cur: float) -> float:
    return (cur - base) / base if base else (0.0 if cur == base else math.inf)


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
    p < ``alpha`` against all baseline samples). Undecidable: the sample sizes cannot reach
    p < ``alpha`` at all (``gate/power.py``), so the verdict could never be "regressed".
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
        p_worse, p_better = p_shift(pooled, cur, higher), p_shift(pooled, cur, not higher)
        significant_worse, significant_better = p_worse < alpha, p_better < alpha
    if not reference and min_p_value(len(pooled), len(cur)) >= alpha:
        verdict, p = "undecidable", p_worse  # no change of any size could be significant
    elif worse_by > limit and significant_worse:
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
