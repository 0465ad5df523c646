"""The gate's power where it is used: settings under which a test can never be significant.

A one-sided Mann-Whitney test of n current against m baseline samples can reach at best
p = 1 / C(n + m, n) (every current sample worse than every baseline one): with 3 rounds
against one session of 3, that is 0.05, never below the default alpha. A paired test of n
pairs can reach at best 0.5^n (the head worse in every pair). Below those sizes nothing can
be decided, however large the change; these functions say so, and what would do.
"""

from __future__ import annotations

import math
from typing import Sequence

from ..common.stats import min_p_value, per_comparison_alpha
from ..config.settings import Settings
from ..results import METRICS, MetricComparison

MOST = 100_000  # search bound for the smallest sufficient size


def undecidable(n_baseline: int, n_current: int, alpha: float) -> bool:
    """Can a Mann-Whitney test of these sample sizes never reach p < alpha?"""
    return min(n_baseline, n_current) < 1 or min_p_value(n_baseline, n_current) >= alpha


def rounds_needed(n_baseline: int, alpha: float) -> int | None:
    """The fewest current samples that can reach p < alpha against ``n_baseline`` samples."""
    if n_baseline < 1:
        return None
    n = 1
    while n <= MOST:
        if min_p_value(n_baseline, n) < alpha:
            return n
        n += 1
    return None


def equal_samples_needed(alpha: float) -> int:
    """The fewest samples, the same number on both sides, that can reach p < alpha."""
    n = 1
    while min_p_value(n, n) >= alpha:
        n += 1
    return n


def pairs_needed(alpha: float) -> int:
    """The fewest pairs in which a head worse in every pair is significant at ``alpha``."""
    return max(1, math.floor(math.log(alpha, 0.5)) + 1)


def undecidable_note(metrics: Sequence[MetricComparison], alpha: float) -> str:
    """Why the gate could not decide, and what would let it: ``Speed, Decode: 3 rounds against
    3 baseline samples cannot reach p < 0.05 (at best 0.05); measure at least 4 rounds``."""
    m = metrics[0]
    names = ", ".join(METRICS[x.metric].label for x in metrics)
    need = rounds_needed(m.n_baseline, alpha)
    more = f"measure at least {need} rounds (--mlx-rounds {need}) or " if need else ""
    return (f"{names}: {m.n_current} round{'s' if m.n_current != 1 else ''} against "
            f"{m.n_baseline} baseline sample{'s' if m.n_baseline != 1 else ''} cannot reach "
            f"p < {alpha:g} (at best {min_p_value(m.n_baseline, m.n_current):.3g}), so no change "
            f"of any size could fail this case; {more}add baseline sessions "
            "(--mlx-update-baselines=add)")


def ab_power_problem(settings: Settings, cases: int) -> str | None:
    """The A/B mode's pairs against the level each metric is judged at (``--mlx-alpha`` split
    over cases x metrics): a one-line error when no case could ever regress, else None."""
    plan, policy = settings.ab, settings.gate
    if not plan.active or not policy.ab_tolerances:
        return None
    level = per_comparison_alpha(policy.alpha, max(1, cases) * len(policy.ab_tolerances))
    if 0.5 ** plan.max_pairs < level:
        return None
    need = pairs_needed(level)
    return (f"--mlx-ab-pairs {plan.min_pairs}:{plan.max_pairs}: with at most {plan.max_pairs} pairs, "
            f"even a head slower in every pair is not significant at the level each metric is "
            f"judged at (--mlx-alpha {policy.alpha:g} / ({cases} cases x {len(policy.ab_tolerances)} "
            f"metrics) = {level:.2g}; a paired test reaches at best 0.5^{plan.max_pairs} = "
            f"{0.5 ** plan.max_pairs:.2g}), so nothing could ever be decided: use at least {need} "
            f"pairs (e.g. --mlx-ab-pairs {need}:{2 * need})")
