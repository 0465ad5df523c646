"""The paired A/B decision (pure): log ratios, Hodges-Lehmann interval, verdicts."""

import math

import numpy as np
import pytest

from pytest_mlxvlm.gate.paired import (
    compare_paired,
    detectable,
    estimate,
    estimate_fast,
    format_change,
    inconclusive,
    more_pairs,
    pairs_to_settle,
    settled,
    worse_log_ratios,
)
from pytest_mlxvlm.results import MetricComparison


def drifting(n: int, factor: float, seed: int = 0, pair_noise: float = 0.02):
    """Base and head of n pairs on a machine whose speed drifts by 20% between pairs."""
    rng = np.random.default_rng(seed)
    drift = rng.normal(0, 0.2, n)
    base = 100 * np.exp(drift + rng.normal(0, pair_noise, n))
    head = 100 / factor * np.exp(drift + rng.normal(0, pair_noise, n))
    return list(base), list(head)


def test_log_ratios_are_positive_when_the_head_is_worse():
    assert worse_log_ratios("generation_tps", [100], [90])[0] == pytest.approx(math.log(100 / 90))
    assert worse_log_ratios("ttft_s", [1.0], [1.1])[0] == pytest.approx(math.log(1.1))
    assert worse_log_ratios("generation_tps", [100], [110])[0] < 0


def test_estimate_of_a_known_shift_and_its_interval():
    d = list(np.full(30, 0.05) + np.random.default_rng(1).normal(0, 0.01, 30))
    est = estimate(d, 0.025)
    assert est.low < est.estimate < est.high
    assert est.estimate == pytest.approx(0.05, abs=0.006)
    assert est.p_worse < 1e-4 and est.p_better > 0.99


def test_a_constant_metric_is_exact():
    est = estimate([0.1] * 5, 0.05)
    assert (est.low, est.estimate, est.high, est.p_worse) == (0.1, 0.1, 0.1, 0.0)
    fast = estimate_fast("ttft_s", [1.0] * 5, [1.1] * 5, 0.05)
    assert fast.estimate == pytest.approx(math.log(1.1)) and fast.p_worse == 0.0
    m = compare_paired("peak_memory", [1.0] * 5, [1.0] * 5, 0.05, 0.05)
    assert m.verdict == "ok" and m.change == 0


@pytest.mark.parametrize("method, name", [("fast", "fast end"), ("median", "paired Wilcoxon")])
def test_drift_cancels_in_pairs_and_a_six_percent_slowdown_is_caught(method, name):
    base, head = drifting(30, 1.06)
    m = compare_paired("generation_tps", base, head, 0.03, 0.01, method)
    assert m.verdict == "regressed"
    low, high = m.interval
    assert low <= m.change <= high < 0
    assert m.change == pytest.approx(-1 + 1 / 1.06, abs=0.03)
    assert m.method.startswith(name)


@pytest.mark.parametrize("method", ["fast", "median"])
def test_unchanged_code_passes_despite_the_drift(method):
    for seed in range(10):
        base, head = drifting(30, 1.0, seed=seed)
        assert compare_paired("generation_tps", base, head, 0.03, 0.01, method).verdict == "ok"


@pytest.mark.parametrize("method", ["fast", "median"])
def test_a_change_within_tolerance_is_not_a_regression(method):
    base, head = drifting(40, 1.01, seed=5, pair_noise=0.005)
    assert compare_paired("generation_tps", base, head, 0.03, 0.01, method).verdict == "ok"


@pytest.mark.parametrize("method", ["fast", "median"])
def test_an_improvement_is_reported(method):
    base, head = drifting(30, 0.9, seed=7)
    assert compare_paired("generation_tps", base, head, 0.03, 0.01, method).verdict == "improved"


def test_the_fast_end_ignores_rounds_that_only_got_slower():
    """A host that slows some rounds of one side (never speeds any up) moves the medians,
    not the fast end."""
    rng = np.random.default_rng(4)
    base = list(100 * np.exp(rng.normal(0, 0.01, 30)))
    head = list(100 * np.exp(rng.normal(0, 0.01, 30)))
    for i in range(0, 30, 2):
        head[i] *= 0.6  # the slow mode, on the head only, in half its rounds
    assert compare_paired("generation_tps", base, head, 0.03, 0.01, "fast").verdict == "ok"
    assert compare_paired("generation_tps", base, head, 0.03, 0.01, "median").verdict == "regressed"


def test_settled_once_the_interval_clears_the_tolerance():
    base, head = drifting(30, 1.15, seed=2)
    slower = compare_paired("generation_tps", base, head, 0.03, 0.01)
    assert settled([slower])
    base, head = drifting(6, 1.03, seed=2, pair_noise=0.05)
    unclear = compare_paired("generation_tps", base, head, 0.03, 0.01)
    assert not settled([unclear])
    assert settled([slower, unclear])  # one clear regression decides the case


def test_detectable_shrinks_with_pairs_and_never_drops_below_the_tolerance():
    assert detectable(0.05, 10, 0.03, 0.01) > detectable(0.01, 40, 0.03, 0.01) > 0.03
    assert detectable(0.1, 1, 0.03, 0.01) is None


def test_the_change_reads_like_the_report():
    base, head = drifting(20, 1.06)
    text = format_change(compare_paired("generation_tps", base, head, 0.03, 0.01))
    assert text.startswith("Decode -") and "pairs" in text and "[" in text and "p=" in text


def test_inconclusive_only_when_a_regression_is_not_ruled_out():
    from pytest_mlxvlm.gate.paired import inconclusive
    from pytest_mlxvlm.results import MetricComparison

    def decode(low: float, high: float) -> MetricComparison:
        return MetricComparison("generation_tps", 100, 100, (low + high) / 2, 0.03, 0.5, "ok", 20, 20, None,
                                interval=[low, high])

    assert inconclusive(decode(-0.15, 0.05))  # wide, and could be 15% slower
    assert not inconclusive(decode(-0.02, 0.20))  # wide, but at worst 2% slower: a pass
    assert not inconclusive(decode(-0.05, 0.05))  # narrow


def _decode(change: float, low: float, high: float, n: int = 20, tolerance: float = 0.03) -> MetricComparison:
    return MetricComparison("generation_tps", 100.0, 100.0 * (1 + change), change, tolerance, 0.5, "ok",
                            n, n, None, interval=[low, high])


def test_pairs_to_settle_an_inconclusive_interval():
    # no change, ±12%: narrower than ±8% after (12/8)^2 = 2.25 times the pairs (clear of 3%
    # would need (12/3)^2 = 16 times)
    wide = _decode(0.0, -0.12, 0.12)
    assert inconclusive(wide)
    assert pairs_to_settle(wide) == pytest.approx(20 * 2.25)
    assert more_pairs([wide, _decode(0.0, -0.01, 0.01)]) == 25  # the narrow metric settles nothing
    # a slowdown beyond the tolerance with a low end below it: until the low end clears 3%
    slowed = _decode(-0.10, -0.30, 0.04)
    needed = pairs_to_settle(slowed)
    assert inconclusive(slowed) and 20 < needed < 20 * (0.17 / 0.08) ** 2
    # a change on the tolerance itself: more pairs are unlikely to settle it soon
    assert more_pairs([_decode(-0.03, -0.40, 0.34)]) is None
    assert more_pairs([_decode(0.0, -0.01, 0.01)]) is None  # nothing inconclusive


@pytest.mark.parametrize("n", [2, 3, 4])
def test_too_few_pairs_for_significance_are_inconclusive_not_a_pass(n):
    """Every pair 10-20% slower, but 2-4 pairs cannot reach p <= 0.05 (the smallest one-sided
    Wilcoxon p is 1/2^n): no interval, so no verdict either way; the case is inconclusive."""
    head = [80.0, 85.0, 82.0, 90.0][:n]
    m = compare_paired("generation_tps", [100.0] * n, head, 0.03, 0.05, "median")
    assert m.verdict == "ok" and m.interval is None and inconclusive(m) and m.p_value > 0.05
    assert format_change(m).startswith("Decode -")
    assert "[no interval: too few pairs]" in format_change(m)
    assert compare_paired("generation_tps", [100.0] * 5, [80, 85, 82, 90, 84], 0.03, 0.05, "median").verdict \
        == "regressed"


def test_below_20_pairs_the_interval_is_the_exact_one():
    """The signed-rank statistic's exact critical values (one-sided 5%: 0, 2, 3, 5, 8, 10 at 5-10 pairs)."""
    from pytest_mlxvlm.gate.paired import _exact_critical

    assert [_exact_critical(n, 0.05) for n in range(4, 11)] == [-1, 0, 2, 3, 5, 8, 10]
    d = [0.01 * (i + 1) for i in range(6)]
    est = estimate(d, 0.05)  # 21 Walsh averages: the 3rd from each end (critical value 2)
    walsh = sorted((d[i] + d[j]) / 2 for i in range(6) for j in range(i, 6))
    assert (est.low, est.high) == (walsh[2], walsh[-3])


def test_an_alpha_beyond_what_the_pairs_can_reach_gives_no_interval():
    est = estimate([0.05, 0.06, 0.04, 0.05, 0.055], 0.003)
    assert est.low == -math.inf and est.high == math.inf
