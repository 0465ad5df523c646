"""Reports: table rows, aggregates and the JSON document (writing them: test_files.py)."""

import json

import pytest

from pytest_mlxvlm.reports.report import (
    aggregate,
    case_row,
    json_document,
    model_section,
    render_table,
)
from pytest_mlxvlm.results import METRICS, CaseResult, Sample


def sample(time_s: float, tokens: int = 10) -> Sample:
    return Sample(
        time_s=time_s, ttft_s=time_s / 4, preprocess_s=0.01, prefill_s=time_s / 5,
        prompt_tokens=90, cached_tokens=0, image_tokens=64, generation_tokens=tokens,
        prompt_tps=450.0, generation_tps=20.0, end_to_end_tps=tokens / time_s, peak_memory=1.5,
    )


def case(resolution: str, times: list[float]) -> CaseResult:
    return CaseResult(model="m", resolution=resolution, samples=[sample(t) for t in times])


def test_row_shows_medians_and_spread():
    row = case_row(case("448x448", [1.0, 2.0, 4.0]))
    assert row[:5] == ["448x448", "201K", "2.00s", "10", "5.0 tok/s"]
    assert row[8] == "64" and row[9] == "1.50GB"
    assert row[10].endswith("(n=3)")


def test_aggregate_totals_medians():
    agg = aggregate([case("224x224", [1.0]), case("1024x1024", [4.0])])
    assert agg["configs"] == 2
    assert agg["total_time_s"] == 5.0 and agg["total_tokens"] == 20
    assert agg["aggregate_tps"] == 4.0
    assert agg["fastest"] == {"resolution": "224x224", "tps": 10.0}
    assert agg["slowest"] == {"resolution": "1024x1024", "tps": 2.5}
    assert agg["average_tps"] == pytest.approx(6.25)


def test_table_is_aligned_markdown():
    lines = render_table(["A", "Long header"], [["x", "y"], ["longer cell", "z"]])
    assert len({len(line) for line in lines}) == 1
    assert lines[1].startswith("|---")


def test_model_section_ends_with_summary_and_aggregate():
    lines = model_section("m", [case("224x224", [1.0, 1.0])], load_time_s=0.5)
    assert lines[-2].startswith("Average 10.0 tok/s across 1 resolution;")
    assert lines[-1] == "Aggregate: 1 configs, 1.00s total, 10 tokens, 10.0 tok/s; model loaded in 0.50s"


def test_json_document_holds_every_sample_and_metric():
    doc = json_document([case("224x224", [1.0, 2.0])], settings={"max_tokens": 10},
                        machine={"key": "k"})
    assert doc["schema_version"] == 1 and doc["machine"] == {"key": "k"}
    res = doc["results"][0]
    assert len(res["samples"]) == 2
    assert set(res["summary"]) == set(METRICS)
    assert set(res["samples"][0]) == {
        "time_s", "ttft_s", "preprocess_s", "prefill_s", "prompt_tokens", "cached_tokens",
        "image_tokens", "generation_tokens", "prompt_tps", "generation_tps", "end_to_end_tps",
        "peak_memory",
    }
    json.dumps(doc)
