"""The data vocabulary: every record round-trips, the JSON shape is stable, summaries are right."""

import json

import numpy as np
import pytest

from pytest_mlxvlm import results
from pytest_mlxvlm.results import (
    EXACT_METRICS,
    METRICS,
    CaseComparison,
    CaseResult,
    MetricComparison,
    Record,
    Sample,
    StepResult,
    VideoInput,
    WorkCheck,
    from_record,
    record_dict,
    summarize,
)

SAMPLE_KEYS = ["time_s", "ttft_s", "preprocess_s", "prefill_s", "prompt_tokens", "cached_tokens",
               "image_tokens", "generation_tokens", "prompt_tps", "generation_tps", "end_to_end_tps",
               "peak_memory"]


def sample(i: int = 0) -> Sample:
    return Sample(time_s=1.0 + i, ttft_s=0.25, preprocess_s=0.01, prefill_s=0.2, prompt_tokens=90,
                  cached_tokens=3, image_tokens=64, generation_tokens=10, prompt_tps=435.0,
                  generation_tps=12.5 - i, end_to_end_tps=10 / (1.0 + i), peak_memory=1.5)


def metric_comparison() -> MetricComparison:
    return MetricComparison("end_to_end_tps", 100.0, 80.0, -0.2, 0.1, 0.004, "regressed", 10, 5,
                            0.08, sessions=3, drift=0.05, allowed=0.12, drift_alpha=0.00625,
                            interval=[-0.25, -0.15], method="wilcoxon")


def case_comparison() -> CaseComparison:
    return CaseComparison("mod::t[224x224]", "regressed", confirmed=True, note="n",
                          workload_changes={"max_tokens": (64, 32)},
                          library_changes={"mlx": ("0.1", "0.2")},
                          metrics=[metric_comparison()], gated=False)


def case_result() -> CaseResult:
    return CaseResult(model="m", resolution="448x336", samples=[sample(0), sample(1), sample(2)],
                      warmup=[sample(5)], workload={"prompt": "p", "max_tokens": 10, "rounds": 3},
                      load_time_s=0.5, test_id="t.py::test_x[m-448x336]", outcome="passed",
                      case_key="t::test_x[448x336]", comparison=case_comparison(),
                      bandwidth={"limit_tps": 50.0, "fraction": 0.2}, side="head",
                      work={"format": 1, "phases": {"prefill": {"evals": 2}}, "token_ids": [1, 2]},
                      work_check=work_check())


def work_check() -> WorkCheck:
    return WorkCheck("added", "baseline", "+60 Multiply per decode step", outputs="outputs differ from token 3",
                     outputs_differ_at=3, gated=False, diff={"verdict": "added"})


def step_result() -> StepResult:
    return StepResult("repeat", "image A again", "HIT", outcome="PARTIAL", cached_tokens=40,
                      prompt_tokens=90, ttft_s=0.05, cold_ttft_s=0.2, correct=False,
                      difference="token 3", error="", passed=False)


def video_input() -> VideoInput:
    return VideoInput(path="/clips/a.mp4", fps=2.0, max_frames=16)


RECORDS = [sample, metric_comparison, case_comparison, case_result, step_result, video_input, work_check]


def _all_records(cls=Record) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _all_records(sub)
    return found


def test_every_record_is_covered_here():
    ours = {cls for cls in _all_records() if cls.__module__ == results.__name__}
    assert {make().__class__ for make in RECORDS} == ours


@pytest.mark.parametrize("make", RECORDS, ids=[m.__name__ for m in RECORDS])
def test_every_record_round_trips_through_json(make):
    record = make()
    data = json.loads(json.dumps(record.to_dict()))
    assert type(record).from_dict(data) == record
    assert type(record).from_dict(data).to_dict() == record.to_dict()


def test_fields_not_saved_are_left_out_and_come_back_empty():
    s = sample()
    s.token_ids, s.input_ids, s.first_logprobs = [1, 2], [3], [0.5]
    assert list(s.to_dict()) == SAMPLE_KEYS
    back = Sample.from_dict(s.to_dict())
    assert (back.token_ids, back.input_ids, back.first_logprobs) == ([], [], None)


def test_pairs_come_back_as_tuples_and_unknown_keys_are_ignored():
    data = json.loads(json.dumps(case_comparison().to_dict()))
    assert data["workload_changes"] == {"max_tokens": [64, 32]}
    back = CaseComparison.from_dict({**data, "added_by_a_later_version": 1})
    assert back.workload_changes == {"max_tokens": (64, 32)}
    assert isinstance(back.metrics[0], MetricComparison)


def test_case_result_json_keeps_its_keys():
    data = case_result().to_dict()
    assert list(data) == ["test_id", "outcome", "case_key", "model", "resolution", "width", "height",
                          "workload", "load_time_s", "summary", "samples", "warmup_samples",
                          "comparison", "bandwidth", "side", "work", "work_check"]
    assert (data["width"], data["height"]) == (448, 336)
    assert list(data["work_check"]) == ["verdict", "against", "description", "outputs", "outputs_differ_at",
                                        "gated", "diff"]
    assert list(data["summary"]) == list(METRICS)
    assert list(data["summary"]["time_s"]) == ["n", "median", "mean", "stdev", "minimum", "maximum",
                                               "iqr", "cv"]
    assert data["summary"]["time_s"]["median"] == 2.0
    assert [list(s) for s in data["samples"]] == [SAMPLE_KEYS] * 3
    assert list(data["comparison"]) == ["key", "status", "confirmed", "note", "workload_changes",
                                        "library_changes", "metrics", "gated", "more_pairs", "more_seconds"]
    assert list(data["comparison"]["metrics"][0]) == [
        "metric", "baseline", "current", "change", "tolerance", "p_value", "verdict", "n_baseline",
        "n_current", "detectable", "sessions", "drift", "allowed", "drift_alpha", "interval", "method"]
    minimal = CaseResult(model="m", resolution="text", samples=[sample()]).to_dict()
    assert list(minimal) == list(data)
    assert (minimal["width"], minimal["height"], minimal["comparison"]) == (0, 0, None)
    assert (minimal["work"], minimal["work_check"]) == (None, None)


def test_step_result_json_adds_what_it_shows():
    data = step_result().to_dict()
    assert data["actual"] == "PARTIAL (40)" and data["speedup"] == pytest.approx(4.0)
    assert "WRONG OUTPUT" in step_result().message()


def test_record_helpers_work_on_any_dataclass():
    from dataclasses import dataclass, field

    @dataclass
    class Thing:
        name: str
        hidden: int = field(default=0, metadata={"skip": True})
        renamed: int = field(default=1, metadata={"key": "other"})

    assert record_dict(Thing("a", 5, 2)) == {"name": "a", "other": 2}
    assert from_record(Thing, {"name": "a", "other": 2, "hidden": 9}) == Thing("a", 0, 2)


def test_metrics_and_schema_versions():
    assert EXACT_METRICS == ("prompt_tokens", "image_tokens", "generation_tokens")
    assert {m.better for m in METRICS.values()} == {"higher", "lower", "exact"}
    assert all(name == m.name for name, m in METRICS.items())
    assert (results.REPORT_SCHEMA, results.BASELINE_SCHEMA, results.HISTORY_SCHEMA) == (1, 1, 1)
    assert results.MERGED_SCHEMA == "pytest-mlxvlm-merged/1"


@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 10, 31, 100])
def test_summarize_matches_numpy(n):
    rng = np.random.default_rng(n)
    values = rng.lognormal(3.0, 0.4, size=n)
    s = summarize(values.tolist())
    q1, q3 = np.percentile(values, [25, 75])  # numpy's default: linear interpolation
    assert s.n == n
    assert s.median == pytest.approx(np.median(values))
    assert s.mean == pytest.approx(np.mean(values))
    assert s.stdev == pytest.approx(np.std(values, ddof=1))
    assert (s.minimum, s.maximum) == (values.min(), values.max())
    assert s.iqr == pytest.approx(q3 - q1)
    assert s.cv == pytest.approx(np.std(values, ddof=1) / np.mean(values))
    assert s.spread == pytest.approx((q3 - q1) / np.median(values))


def test_summary_of_zeros_has_no_relative_spread():
    s = summarize([0, 0, 0])
    assert (s.cv, s.spread) == (0.0, 0.0)
    assert summarize(np.array([4, 2])).median == 3.0  # any iterable of numbers


def test_summary_of_known_values():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (s.n, s.median, s.minimum, s.maximum) == (5, 3.0, 1.0, 100.0)
    assert s.iqr == pytest.approx(2.0)
    assert s.mean == pytest.approx(22.0)
    assert s.spread == pytest.approx(2.0 / 3.0)
    assert s.cv == pytest.approx(s.stdev / 22.0)


def test_single_sample_has_no_spread():
    s = summarize([5.0])
    assert (s.median, s.stdev, s.iqr, s.cv) == (5.0, 0.0, 0.0, 0.0)


def test_no_samples_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


def test_one_metric_vocabulary():
    """Every metric answers to its JSON field, its label and its table heading, in any case;
    no two metrics share a spelling."""
    from pytest_mlxvlm.results import METRICS, metric_name

    def fold(s):
        return "".join(c for c in s.lower() if c.isalnum())

    folded = [f for m in METRICS.values() for f in {fold(m.name), fold(m.label), fold(m.heading)}]
    assert len(set(folded)) == len(folded)
    for m in METRICS.values():
        for spelling in (m.name, m.label, m.heading, m.label.upper(), m.heading.lower()):
            assert metric_name(spelling) == m.name
    assert metric_name("Peak mem") == metric_name("peak-memory") == "peak_memory"
    assert metric_name("speed") == "end_to_end_tps" and metric_name("Decode") == "generation_tps"
    assert metric_name("tok/s") is None


def test_a_requests_images_are_always_a_list():
    image = object()
    assert results.GenerationRequest(image=None, prompt="p", max_tokens=1).images == []
    assert results.GenerationRequest(image=image, prompt="p", max_tokens=1).images == [image]
    assert results.GenerationRequest(image=("a.png", "b.png"), prompt="p", max_tokens=1).images == ["a.png", "b.png"]
    assert results.image_list([]) == [] and results.image_list("a.png") == ["a.png"]


def test_a_summary_of_no_such_metric_names_the_ones_there_are():
    case = CaseResult(model="m", resolution="224x224", samples=[sample(0), sample(1)])
    assert case.summary("ttft_s").median == 0.25
    with pytest.raises(ValueError, match=r"no metric 'ttft' in a sample; use one of cached_tokens, end_to_end_tps, .*ttft_s"):
        case.summary("ttft")
    assert sorted(results.SAMPLE_FIGURES) == sorted(SAMPLE_KEYS)
