"""The gate's statistics: significance, detectable effects, the drift of baseline sessions.

(Summaries of samples, ``results.summarize``, are tested in test_results.py.)"""

import math

import numpy as np
import pytest

from pytest_mlxvlm.common.stats import (
    detectable_regression,
    drift_allowance,
    min_p_value,
    p_shift,
    per_comparison_alpha,
    relative_noise,
)


def test_p_shift_is_one_sided():
    base, slower = [100.0, 102.0, 98.0, 101.0, 99.0], [70.0, 72.0, 69.0, 71.0, 73.0]
    assert p_shift(base, slower, lower_now=True) == pytest.approx(min_p_value(5, 5))
    assert p_shift(base, slower, lower_now=False) > 0.9
    assert p_shift([1.0] * 3, [0.5] * 3, lower_now=True) == 0.0  # constant sets: moved or not
    assert p_shift([1.0] * 3, [0.5] * 3, lower_now=False) == 1.0


def test_min_p_value():
    assert min_p_value(5, 5) == pytest.approx(1 / 252)
    assert min_p_value(2, 2) == pytest.approx(1 / 6)


def test_relative_noise_is_a_robust_pooled_spread():
    assert relative_noise([10.0] * 4) == 0.0 and relative_noise() == 0.0 and relative_noise([5.0]) == 0.0
    one = relative_noise([9.0, 10.0, 11.0])
    assert one == pytest.approx(1.4826 / 10, rel=1e-3)
    assert relative_noise([9.0, 10.0, 11.0], [9.0, 10.0, 11.0]) == pytest.approx(one)
    assert relative_noise([9.0, 10.0, 11.0, 1000.0]) < 0.2  # one outlier barely moves it


def test_detectable_regression():
    assert detectable_regression(2, 2, 0.1, 0.1, 0.05) is None  # 1/6 can never be < 0.05
    assert detectable_regression(0, 5, 0.1, 0.1, 0.05) is None
    small = detectable_regression(5, 5, 0.01, 0.10, 0.05)
    assert small == 0.10  # never below the tolerance
    noisy = detectable_regression(5, 5, 0.20, 0.10, 0.05)
    assert noisy == pytest.approx((1.6449 + 0.8416) * 0.2 * math.sqrt(0.4) * math.sqrt(math.pi / 3), rel=1e-3)
    assert detectable_regression(20, 20, 0.20, 0.10, 0.05) < noisy


def test_per_comparison_alpha():
    assert per_comparison_alpha(0.05, 16) == pytest.approx(0.003125)
    assert per_comparison_alpha(0.05, 0) == per_comparison_alpha(0.05, 1) == 0.05


def test_drift_allowance_is_a_prediction_interval_on_log_medians():
    from scipy import stats as sps

    medians = [100.0, 80.0, 105.0, 95.0, 110.0]
    sd, allowed = drift_allowance(medians, 0.05, higher=True)
    logs = np.log(medians)
    assert sd == pytest.approx(np.std(logs, ddof=1))
    bound = sps.t.ppf(0.95, 4) * sd * math.sqrt(1 + 1 / 5)
    assert allowed == pytest.approx(1 - math.exp(-bound))
    _, up = drift_allowance(medians, 0.05, higher=False)
    assert up == pytest.approx(math.exp(bound) - 1) and up > allowed  # lower-is-better metrics
    assert drift_allowance(medians, 0.001, higher=True)[1] > allowed  # a stricter level allows more
    assert drift_allowance([100.0], 0.05, higher=True) == (None, 0.0)
    assert drift_allowance([100.0, 0.0], 0.05, higher=True) == (None, 0.0)


def test_median_interval_from_order_statistics():
    from pytest_mlxvlm.common.stats import median_interval, relative_half_width

    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None  # 5 values cannot give 95%
    values = [float(v) for v in range(1, 21)]
    low, high = median_interval(values)
    assert low < 10.5 < high and (low, high) == (6.0, 15.0)
    assert relative_half_width(values) == pytest.approx(4.5 / 11)
    assert relative_half_width([3.0] * 10) == 0.0
