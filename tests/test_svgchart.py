"""The dashboard's charts (reports/svgchart.py): date labels and spans."""

from pytest_mlxvlm.reports.svgchart import date_label, short_span


def test_a_span_of_dates_with_and_without_a_timezone_is_measured_as_utc():
    assert short_span(["2026-11-27T06:00:00", "2026-11-27T09:00:00+00:00"]) is True
    assert short_span(["2026-11-20T06:00:00+00:00", "2026-11-27T09:00:00"]) is False
    assert short_span(["not a date", "2026-11-27"]) is False and short_span([]) is False


def test_date_labels():
    assert date_label("2026-11-27T06:07:00+00:00", same_day=True) == "11-27 06:07"
    assert date_label("2026-11-27T06:07:00+00:00", same_day=False) == "2026-11-27"
    assert date_label("", same_day=False) == "no date"
