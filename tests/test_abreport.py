"""The A/B reports (pure): the table names test, tolerance and estimator; inconclusive is its own mark."""

from pytest_mlxvlm.reports.abreport import ab_markdown, ab_rows, ab_section, columns, inconclusive_lines, settle_text
from pytest_mlxvlm.results import CaseComparison, CaseResult, MetricComparison, Sample


def _sample() -> Sample:
    return Sample(time_s=1, ttft_s=0.1, preprocess_s=0, prefill_s=0.1, prompt_tokens=90, cached_tokens=0,
                  image_tokens=64, generation_tokens=64, prompt_tps=900, generation_tps=100,
                  end_to_end_tps=64, peak_memory=1.0)


def _head(status: str, low: float, high: float, method: str = "fast end (q90 of tok/s, q10 of times), "
          "paired bootstrap", **extra) -> CaseResult:
    verdict = "inconclusive" if status == "inconclusive" else "ok"
    metric = MetricComparison("generation_tps", 101.0, 99.0, -0.02, 0.03, 0.4, verdict, 20, 20, 0.09,
                              interval=[low, high], method=method)
    comparison = CaseComparison("pkg.test_app::test_describe[224x224]", status, metrics=[metric],
                                note="inconclusive: Decode ... reaches past its 3% tolerance; 20 pairs", **extra)
    return CaseResult("fake:m", "224x224", [_sample()], case_key=comparison.key, side="head",
                      comparison=comparison)


def test_the_table_names_the_test_the_tolerance_and_the_estimator():
    head = _head("pass", -0.04, 0.0)
    assert columns("fast")[:6] == ("Test", "Metric", "Base (fast end)", "Head (fast end)", "Change [interval]",
                                   "Tolerance")
    assert columns("median")[2] == "Base (median)"
    assert ab_rows([head]) == [["test_describe[224x224]", "Decode", "101.0 tok/s", "99.0 tok/s",
                                "-2.0% [-4.0%, +0.0%]", "3%", "0.4", "20", "ok"]]
    lines = ab_section([head])
    assert "| Test " in lines[0] and "Base (fast end)" in lines[0]
    assert any("not the medians of the per-side tables above" in line for line in lines)


def test_an_inconclusive_case_is_its_own_outcome_with_what_would_settle_it():
    head = _head("inconclusive", -0.14, 0.10, more_pairs=25, more_seconds=150.0)
    assert ab_rows([head])[0][-1] == "inconclusive"
    assert settle_text(head.comparison) == ("about 25 more pairs (~2.5 min) would likely settle it: "
                                            "--mlx-ab-pairs MIN:45")
    assert inconclusive_lines([head]) == [
        "test_describe[224x224] (fake:m): Decode ... reaches past its 3% tolerance; about 25 more "
        "pairs (~2.5 min) would likely settle it: --mlx-ab-pairs MIN:45"]
    markdown = ab_markdown([head], machine={"key": "k"}, counts={"compared": 1, "regressed": 0, "inconclusive": 1})
    assert "**1 compared, 0 regressed, 1 inconclusive**" in markdown
    assert "| ⚪ inconclusive |" in markdown and "✅" not in markdown
    assert "**⚪ inconclusive**: passes, but nothing was shown either way" in markdown
    stuck = _head("inconclusive", -0.14, 0.10, more_pairs=None)
    assert settle_text(stuck.comparison).startswith("more pairs are unlikely to settle it soon")
