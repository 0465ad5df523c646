"""The tolerances of the gate and their parsing (pure)."""

import pytest

from pytest_mlxvlm.config.tolerances import (
    DEFAULT_TOLERANCES,
    ToleranceError,
    describe_tolerances,
    merge_tolerances,
    parse_tolerances,
)


def test_parse_tolerances():
    assert parse_tolerances(["ttft_s=20", "peak_memory=off, prompt_tps=7.5%"]) == {
        "ttft_s": 0.2, "peak_memory": None, "prompt_tps": 0.075,
    }
    merged = merge_tolerances(parse_tolerances(["peak_memory=off", "time_s=10"]))
    assert "peak_memory" not in merged and merged["time_s"] == 0.1
    assert merged["end_to_end_tps"] == DEFAULT_TOLERANCES["end_to_end_tps"]


def test_metrics_are_named_as_the_tables_name_them():
    """Speed, Decode, TTFT, Prefill, Peak mem...: any case, any spacing; the JSON fields too."""
    assert parse_tolerances(["Speed=20", "decode=5", "TTFT=30", "prefill=8", "Peak mem=off",
                             "Time=12, preprocess=50"]) == {
        "end_to_end_tps": 0.2, "generation_tps": 0.05, "ttft_s": 0.3, "prompt_tps": 0.08,
        "peak_memory": None, "time_s": 0.12, "preprocess_s": 0.5,
    }
    assert parse_tolerances(["peak-memory=3", "PEAK_MEM=4"]) == {"peak_memory": 0.04}
    assert parse_tolerances(["Prefill time=9"]) == {"prefill_s": 0.09}
    assert describe_tolerances(DEFAULT_TOLERANCES) == "Speed=10 Decode=10 TTFT=15 Peak_mem=5"
    assert parse_tolerances(describe_tolerances(DEFAULT_TOLERANCES).split()) == DEFAULT_TOLERANCES


@pytest.mark.parametrize("bad", ["ttft_s", "nope=5", "image_tokens=5", "Image tok=5", "ttft_s=abc",
                                 "ttft_s=-1", "Speed"])
def test_bad_tolerances(bad):
    with pytest.raises(ToleranceError):
        parse_tolerances([bad])
