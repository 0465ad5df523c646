"""What a load run shows (suites/server/loadstats.py): saturation as a queue that grows, and
goodput against objectives."""

from __future__ import annotations

import pytest

from pytest_mlxvlm.suites.server.client import Timing
from pytest_mlxvlm.suites.server.load import LoadRun, RequestRecord
from pytest_mlxvlm.suites.server.loadstats import good, saturation, summarize_run


def timing(ttft: float = 0.01, gap: float = 0.005, tokens: int = 4, prompt: int = 10) -> Timing:
    chunks = [ttft + i * gap for i in range(tokens)]
    return Timing(time_s=chunks[-1] + 0.001, ttft_s=ttft, chunk_times=chunks, prompt_tokens=prompt,
                  cached_tokens=0, completion_tokens=tokens, finish_reason="length", usage=True)


def test_saturation_is_a_queue_that_grows():
    run = LoadRun(mode="open-loop", rate=5.0, in_flight=[(i * 0.2, i // 2) for i in range(40)])
    run.records = [RequestRecord(i, i * 0.2, i * 0.2 + 1, timing=timing(ttft=0.1 * (1 + i))) for i in range(40)]
    found = saturation(run)
    assert found["saturated"] and found["queue_growth"] == pytest.approx(19.5, rel=0.1)
    assert found["ttft_growth"] > 3
    steady = LoadRun(mode="open-loop", in_flight=[(i * 0.2, i % 3) for i in range(40)])
    steady.records = run.records
    assert not saturation(steady)["saturated"]


def test_goodput_counts_requests_that_met_every_objective():
    fast, slow = timing(ttft=0.1, gap=0.01), timing(ttft=0.6, gap=0.01)
    assert good(fast, {"ttft": 0.5, "itl": 0.05}) and not good(slow, {"ttft": 0.5})
    assert not good(timing(gap=0.2), {"itl": 0.05, "tpot": 1.0})
    run = LoadRun(mode="continuous", clients=1, duration_s=2.0,
                  records=[RequestRecord(0, 0, 1, timing=fast), RequestRecord(1, 1, 2, timing=slow)])
    goodput = summarize_run(run, max_tokens=4, slo={"ttft": 0.5})["goodput"]
    assert goodput == {"slo_ms": {"ttft": 500.0}, "good_requests": 1, "fraction": 0.5,
                       "requests_per_s": 0.5, "tokens_per_s": 2.0}
