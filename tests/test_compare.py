"""The gate's decision rules (pure)."""

import pytest

from pytest_mlxvlm.common.stats import min_p_value
from pytest_mlxvlm.gate.compare import (
    compare_metric,
    library_differences,
    token_differences,
    workload_differences,
)

BASE = [100.0, 102.0, 98.0, 101.0, 99.0]


def test_clear_slowdown_is_a_regression():
    cur = [v * 0.75 for v in BASE]
    c = compare_metric("end_to_end_tps", BASE, cur, 0.10)
    assert c.verdict == "regressed"
    assert c.change == pytest.approx(-0.25)
    assert c.p_value == pytest.approx(min_p_value(5, 5))
    assert c.worse_by == pytest.approx(0.25)


def test_noise_within_tolerance_is_not():
    cur = [97.0, 104.0, 95.0, 100.0, 103.0]
    assert compare_metric("end_to_end_tps", BASE, cur, 0.10).verdict == "ok"


def test_change_beyond_tolerance_but_not_significant_is_not():
    base = [100.0, 60.0, 140.0, 100.0, 62.0]
    cur = [85.0, 130.0, 55.0, 88.0, 58.0]
    c = compare_metric("end_to_end_tps", base, cur, 0.10)
    assert c.worse_by > 0.10 and c.p_value > 0.05 and c.verdict == "ok"


def test_lower_is_better_metrics():
    slower = [v * 1.3 for v in BASE]
    assert compare_metric("ttft_s", BASE, slower, 0.15).verdict == "regressed"
    assert compare_metric("ttft_s", slower, BASE, 0.15).verdict == "improved"


def test_deterministic_metric_any_change_beyond_tolerance_counts():
    assert compare_metric("peak_memory", [1.0] * 5, [1.2] * 5, 0.05).verdict == "regressed"
    assert compare_metric("peak_memory", [1.0] * 5, [1.02] * 5, 0.05).verdict == "ok"


def test_session_drift_widens_the_allowance():
    from pytest_mlxvlm.common.stats import drift_allowance

    sd, allowed = drift_allowance([100.0, 80.0, 105.0, 95.0, 110.0], 0.05, higher=True)
    assert sd > 0.1 and 0.2 < allowed < 0.5
    assert drift_allowance([100.0], 0.05, higher=True) == (None, 0.0)
    sessions = [[v * f for v in BASE] for f in (1.0, 0.8, 1.05, 0.95, 1.1)]
    drop = [v * 0.82 for v in BASE]  # 18% below the middle session: drift allows it
    c = compare_metric("end_to_end_tps", sessions, drop, 0.10)
    assert c.sessions == 5 and c.verdict == "ok" and c.allowed > 0.18
    assert compare_metric("end_to_end_tps", sessions, [v * 0.5 for v in BASE], 0.10).verdict == "regressed"
    assert compare_metric("end_to_end_tps", [BASE], drop, 0.10).verdict == "regressed"


def test_drift_allowance_is_a_family_wise_share():
    from pytest_mlxvlm.common.stats import per_comparison_alpha

    assert per_comparison_alpha(0.05, 16) == pytest.approx(0.003125)
    assert per_comparison_alpha(0.05, 0) == 0.05
    sessions = [[v * f for v in BASE] for f in (1.0, 0.8, 1.05, 0.95, 1.1)]
    drop = [v * 0.7 for v in BASE]  # 30% below the middle session
    one = compare_metric("end_to_end_tps", sessions, drop, 0.10)
    family = compare_metric("end_to_end_tps", sessions, drop, 0.10, drift_alpha=0.05 / 16)
    assert one.verdict == "regressed" and one.drift_alpha == 0.05
    # Judged as one of 16 comparisons, the same drift allows more: no false alarm from drift.
    assert family.verdict == "ok" and family.allowed > one.allowed > 0.2
    assert family.drift_alpha == pytest.approx(0.003125) and family.p_value < 0.05
    assert compare_metric("end_to_end_tps", [BASE], drop, 0.10, drift_alpha=0.001).drift_alpha is None


def test_reference_uses_tolerance_only():
    c = compare_metric("end_to_end_tps", [74.8], [40.0] * 5, 0.30, reference=True)
    assert c.verdict == "regressed" and c.p_value is None and c.detectable is None
    assert compare_metric("end_to_end_tps", [74.8], [60.0] * 5, 0.30, reference=True).verdict == "ok"


def test_workload_token_and_library_differences():
    assert workload_differences({"prompt": "a", "max_tokens": 64, "rounds": 5},
                                {"prompt": "a", "max_tokens": 32, "rounds": 3}) == {"max_tokens": (64, 32)}
    assert token_differences({"image_tokens": [64.0] * 3}, {"image_tokens": [69.0] * 3}) == {
        "image_tokens": (64, 69)}
    assert token_differences({"image_tokens": [64.0]}, {"image_tokens": [64.0, 64.0]}) == {}
    assert library_differences({"mlx": "0.31.0"}, {"mlx": "0.33.0"}) == {"mlx": ("0.31.0", "0.33.0")}
