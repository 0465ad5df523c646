"""The gate's power where it is used: sizes that can never be significant (pure)."""

import pytest

from pytest_mlxvlm.common.stats import min_p_value
from pytest_mlxvlm.config.settings import ABPlan, GatePolicy, Settings
from pytest_mlxvlm.gate.compare import compare_metric
from pytest_mlxvlm.gate.power import (
    ab_power_problem,
    equal_samples_needed,
    pairs_needed,
    rounds_needed,
    undecidable,
    undecidable_note,
)


def test_three_rounds_against_three_can_never_reach_five_percent():
    assert min_p_value(3, 3) == pytest.approx(0.05)
    assert undecidable(3, 3, 0.05) and not undecidable(3, 3, 0.1) and not undecidable(4, 4, 0.05)
    assert equal_samples_needed(0.05) == 4
    assert rounds_needed(3, 0.05) == 4  # 1 / C(7, 3) = 0.029
    assert rounds_needed(15, 0.05) == 2  # 1 / C(17, 2) = 0.007
    assert rounds_needed(20, 0.05) == 1 and rounds_needed(19, 0.05) == 2  # 1 / 20 is not below 0.05


def test_a_slowdown_the_samples_cannot_show_is_undecidable_not_ok():
    base = [100.0, 101.0, 99.0]
    c = compare_metric("end_to_end_tps", base, [75.0, 76.0, 74.0], 0.10, alpha=0.05)
    assert c.verdict == "undecidable" and c.detectable is None and c.change == pytest.approx(-0.25)
    assert compare_metric("end_to_end_tps", base, [75.0, 76.0, 74.0], 0.10, alpha=0.1).verdict == "regressed"
    note = undecidable_note([c], 0.05)
    assert note.startswith("Speed: 3 rounds against 3 baseline samples cannot reach p < 0.05 (at best 0.05)")
    assert "measure at least 4 rounds (--mlx-rounds 4)" in note


def test_pairs_the_a_b_mode_needs():
    assert pairs_needed(0.05) == 5  # 0.5^5 = 0.031
    assert pairs_needed(0.05 / 16) == 9
    settings = Settings(ab=ABPlan(base_rev="HEAD", min_pairs=2, max_pairs=6), gate=GatePolicy())
    problem = ab_power_problem(settings, cases=4)
    assert problem is not None and problem.startswith("--mlx-ab-pairs 2:6: with at most 6 pairs")
    assert "use at least 9 pairs (e.g. --mlx-ab-pairs 9:18)" in problem
    assert "use at least 7 pairs" in (ab_power_problem(settings, cases=1) or "")  # 0.05 / 4 = 0.0125
    enough = Settings(ab=ABPlan(base_rev="HEAD", min_pairs=20, max_pairs=40))
    assert ab_power_problem(enough, cases=10) is None
    assert ab_power_problem(Settings(), cases=10) is None  # not the A/B mode
