"""Summary statistics."""

import pytest

from pytest_mlxvlm.results import summarize


def test_summary_of_known_values():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.n == 5
    assert s.median == 3.0
    assert s.minimum == 1.0 and s.maximum == 100.0
    assert s.iqr == pytest.approx(2.0)
    assert s.mean == pytest.approx(22.0)
    assert s.spread == pytest.approx(2.0 / 3.0)
    assert s.cv == pytest.approx(s.stdev / 22.0)


def test_single_sample_has_no_spread():
    s = summarize([5.0])
    assert (s.median, s.stdev, s.iqr, s.cv) == (5.0, 0.0, 0.0, 0.0)


def test_no_samples_is_an_error():
    with pytest.raises(ValueError):
        summarize([])
