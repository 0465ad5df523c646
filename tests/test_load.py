"""The load generators (suites/server/load.py) against a fake ``send``: continuous concurrency,
synchronized rounds, open-loop arrivals, a failure that stops a run, and the per-request rows."""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from pytest_mlxvlm.suites.server.client import Timing
from pytest_mlxvlm.suites.server.load import (
    LOAD_THREAD,
    LoadError,
    LoadRun,
    arrival_offsets,
    run_continuous,
    run_open_loop,
    run_rounds,
    single,
)
from pytest_mlxvlm.suites.server.loadstats import breakdown, summarize_run
from pytest_mlxvlm.suites.server.process import ServerError


def timing(ttft: float = 0.01, gap: float = 0.005, tokens: int = 4, prompt: int = 10) -> Timing:
    chunks = [ttft + i * gap for i in range(tokens)]
    return Timing(time_s=chunks[-1] + 0.001, ttft_s=ttft, chunk_times=chunks, prompt_tokens=prompt,
                  cached_tokens=0, completion_tokens=tokens, finish_reason="length", usage=True)


class FakeServer:
    """``send``: sleeps ``service_s`` (one request at a time when ``serial``), counts what is in flight."""

    def __init__(self, service_s: float = 0.02, serial: bool = False, fail_at: int | None = None) -> None:
        self.service_s, self.serial, self.fail_at = service_s, serial, fail_at
        self.lock = threading.Lock()
        self.busy = threading.Lock()
        self.in_flight = self.peak = self.calls = 0
        self.cut = threading.Event()
        self.aborts = 0

    def send(self, body: bytes) -> Timing:
        with self.lock:
            self.calls += 1
            n = self.calls
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            if self.fail_at is not None and n == self.fail_at:
                raise ServerError("POST x answered HTTP 500 Internal Server Error: boom")
            if self.serial:
                with self.busy:
                    if self.cut.wait(self.service_s):
                        raise ServerError("the stream ended before the response was complete")
            elif self.cut.wait(self.service_s):
                raise ServerError("the stream ended before the response was complete")
            return timing()
        finally:
            with self.lock:
                self.in_flight -= 1

    def abort(self) -> None:
        self.aborts += 1
        self.cut.set()


def _load_threads() -> int:
    return sum(t.name.startswith(LOAD_THREAD) for t in threading.enumerate())


def jobs(i: int):
    return single(b"{}", {"images": "224x224" if i % 2 else "448x448"})


def test_continuous_keeps_n_requests_in_flight():
    server = FakeServer(service_s=0.02)
    run = run_continuous(server.send, jobs, 3, requests=12, warmup=1)
    assert len(run.records) == 12 and all(r.ok for r in run.records)
    assert server.calls == 15  # 3 warm-up requests, not kept
    assert server.peak == 3
    assert max(r.in_flight for r in run.records) == 3
    assert run.duration_s == pytest.approx(max(r.ended_s for r in run.records) - min(r.sent_s for r in run.records))
    summary = summarize_run(run, max_tokens=4)
    assert summary["aggregate_tps"] == pytest.approx(12 * 4 / run.duration_s)
    assert summary["request_rate"] == pytest.approx(12 / run.duration_s)
    assert set(summary["ttft_ms"]) == {"p50", "p90", "p95", "p99"} and summary["fixed_length"]


def test_continuous_for_a_duration_lets_the_last_requests_end():
    server = FakeServer(service_s=0.05)
    run = run_continuous(server.send, jobs, 2, duration_s=0.3)
    assert 2 <= len(run.records) <= 16 and all(r.ok for r in run.records)  # 12 at 50 ms; fewer on a loaded machine
    assert all(r.sent_s < 0.3 for r in run.records), "a request was started after the duration"
    assert max(r.ended_s for r in run.records) >= 0.3, "the run ended before its duration"
    assert server.in_flight == 0


def test_synchronized_rounds_release_n_together():
    server = FakeServer(service_s=0.02)
    run = run_rounds(server.send, jobs, 4, 3, warmup=1)
    assert len(run.records) == 12 and len(run.round_walls) == 3 and server.calls == 16
    assert [r.index for r in run.records] == list(range(12))
    summary = summarize_run(run, max_tokens=4)
    assert summary["load"] == "synchronized-rounds" and summary["round_wall_s"] == run.round_walls
    assert summary["aggregate_tps"] == pytest.approx(16 / statistics.mean(run.round_walls))


def test_a_failed_request_stops_the_run_and_cuts_the_others():
    server = FakeServer(service_s=30.0, fail_at=3)
    started = time.monotonic()
    with pytest.raises(LoadError, match=r"HTTP 500 .*boom \(request 3 of the run, 3 in flight when it failed\)") as info:
        run_continuous(server.send, jobs, 3, requests=30, abort=server.abort)
    assert time.monotonic() - started < 10  # the 30 s requests were cut, not waited for
    assert server.aborts == 1 and not _load_threads()
    assert isinstance(info.value.run, LoadRun) and any(r.error for r in info.value.run.records)


def test_arrivals_are_poisson_or_constant_and_the_same_every_time():
    poisson = arrival_offsets(4.0, 2001, "poisson", seed=0)
    gaps = [b - a for a, b in zip(poisson, poisson[1:])]
    assert poisson[0] == 0 and poisson == arrival_offsets(4.0, 2001, "poisson", seed=0)
    assert statistics.mean(gaps) == pytest.approx(0.25, rel=0.08)
    assert statistics.stdev(gaps) == pytest.approx(0.25, rel=0.1)  # exponential: sd = mean
    assert arrival_offsets(2.0, 4, "constant") == [0.0, 0.5, 1.0, 1.5]


def test_open_loop_below_capacity_is_sustained():
    server = FakeServer(service_s=0.02)
    run = run_open_loop(server.send, jobs, 50.0, 30, arrivals="constant")
    assert len(run.records) == 30 and all(r.ok for r in run.records)
    lags = [abs(r.sent_s - r.scheduled_s) for r in run.records]  # a loaded machine may stall one send
    assert statistics.median(lags) < 0.02 and max(lags) < 0.5
    summary = summarize_run(run, max_tokens=4)
    assert summary["saturated"] is False and summary["rate"] == 50.0 and summary["in_flight_peak"] <= 8


def test_open_loop_beyond_capacity_ends_in_bounded_time_with_the_backlog():
    server = FakeServer(service_s=0.5, serial=True)  # 2 requests/s at most: 20 s to serve all 40
    started = time.monotonic()
    with pytest.raises(LoadError, match=r"did not keep up with 100 requests/s \(constant arrivals\): \d+ of 40 "
                                        r"requests unfinished .* the backlog grew to \d+ requests in flight") as info:
        run_open_loop(server.send, jobs, 100.0, 40, arrivals="constant", drain_floor_s=0.5, abort=server.abort)
    assert time.monotonic() - started < 8, "the backlog was waited for instead of cut"
    run = info.value.run
    assert run.unfinished > 10 and sum(r.ok for r in run.records) < 40
    assert not _load_threads(), "threads of cut requests were left behind"


def test_breakdown_by_what_requests_held():
    server = FakeServer(service_s=0.001)
    run = run_continuous(server.send, jobs, 1, requests=6)
    groups = breakdown(run, "images")
    assert {k: v["requests"] for k, v in groups.items()} == {"448x448": 3, "224x224": 3}
    row = run.records[0].row()
    assert row["images"] == "448x448" and row["ttft_ms"] == pytest.approx(10.0) and len(row["itl_ms"]) == 3
