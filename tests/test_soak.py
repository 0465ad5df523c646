"""The memory soak's pieces (suites/server/soak.py): where memory is read, the trend and its
verdict, and a soak against a fake server."""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from pytest_mlxvlm.suites.server.client import Timing
from pytest_mlxvlm.suites.server.load import single
from pytest_mlxvlm.suites.server.soak import (
    memory_series,
    overall,
    prometheus_memory,
    run_soak,
    sample_every,
    trend,
)

PROMETHEUS = """# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 2.5e+08
vllm_mlx_metal_memory_bytes{kind="active"} 1.2e+09
vllm_mlx_metal_memory_bytes{kind="peak"} 2.0e+09
vllm_mlx_cache_memory_bytes 5e+07
"""


def series(per_100: float, noise_mb: float, n: int = 500, seed: int = 0, warm_mb: float = 0.0):
    rng = random.Random(seed)
    out = []
    for done in range(0, n + 1, 5):
        warm = warm_mb * min(1.0, done / 50)  # a first fill that levels off (allocators, caches)
        out.append((done, done / 10, 300 + warm + per_100 * done / 100 + rng.gauss(0, noise_mb)))
    return out


def test_a_flat_series_is_no_leak_even_after_a_warm_fill():
    found = trend(series(0.0, 1.0, warm_mb=40), threshold_mb=8)
    assert found.verdict == "no leak" and abs(found.growth_mb) < 1 and found.high_mb < 8
    assert found.points == 81  # the first fifth left out


def test_a_steady_growth_beyond_the_threshold_is_a_leak():
    found = trend(series(15.0, 1.0), threshold_mb=8)
    assert found.leak and found.growth_mb == pytest.approx(15, rel=0.1) and found.low_mb > 8
    assert re.search(r"growth \+1[45]\.\d\d MB per 100 requests \(95% interval \+1[45]\.\d\d to "
                     r"\+1[45]\.\d\d; threshold 8\): leak$", found.line())


def test_growth_near_the_threshold_is_inconclusive_and_few_points_say_so():
    assert trend(series(8.0, 12.0), threshold_mb=8).verdict == "inconclusive"
    assert trend(series(30.0, 0.0, n=20), threshold_mb=8).verdict == "too few points"


def test_the_soaks_verdict_does_not_depend_on_the_order_of_its_series():
    flat, noisy, leak = (trend(series(0.0, 1.0), 8), trend(series(8.0, 12.0), 8), trend(series(15.0, 1.0), 8))
    few = trend(series(30.0, 0.0, n=20), 8)
    assert overall([flat, noisy]) == overall([noisy, flat]) == "inconclusive"
    assert overall([noisy, leak, flat]) == "leak"
    assert overall([few, flat]) == overall([flat, few]) == "no leak"
    assert overall([few]) == "too few points" and overall([]) == "no samples"


def test_prometheus_gauges_of_current_memory():
    assert prometheus_memory(PROMETHEUS) == {
        "process_resident_memory_bytes": 250.0,
        'vllm_mlx_metal_memory_bytes{kind="active"}': 1200.0,
    }
    assert prometheus_memory("http_requests_total 5\n") == {}


def _metrics_server(http_server, body: str, kind: str = "text/plain"):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            data = body.encode()
            self.send_response(200 if self.path == "/metrics" and body else 404)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
    return http_server(Handler)


def test_memory_comes_from_metrics_then_rss_then_a_peak(http_server):
    prom = _metrics_server(http_server, PROMETHEUS)
    found, why = memory_series(prom, pid=os.getpid())
    assert why == "the server's /metrics" and [s.read() for s in found] == [250.0, 1200.0]
    peak = _metrics_server(http_server, json.dumps({"latest": {"peak_memory_gb": 0.5}, "recent": []}),
                           "application/json")
    found, why = memory_series(peak, pid=os.getpid())
    assert "RSS" in found[0].name and found[0].kind == "current" and found[0].read() > 1
    found, why = memory_series(peak, pid=None)
    assert found[0].kind == "high-water" and found[0].read() == 500.0 and "high-water" in why
    none = _metrics_server(http_server, "")
    found, why = memory_series(none, pid=None)
    assert found == [] and why.startswith(f"the server at {none} reports no memory")


def test_a_gauge_that_reads_zero_is_no_memory_figure(http_server):
    """vllm-mlx on a machine without Metal exposes its Metal gauge as 0: the soak would judge a
    flat line and pass any leak, so it reads the process's RSS instead."""
    zero = _metrics_server(http_server, 'vllm_mlx_metal_memory_bytes{kind="active"} 0.0\n')
    found, why = memory_series(zero, pid=os.getpid())
    assert len(found) == 1 and "RSS" in found[0].name and found[0].read() > 1 and "RSS" in why


def test_a_soak_samples_memory_as_requests_complete():
    memory = iter(range(10_000))
    from pytest_mlxvlm.suites.server.soak import MemorySeries

    watched = MemorySeries("fake", "current", lambda: float(next(memory)))

    def send(body: bytes) -> Timing:
        return Timing(time_s=0.001, ttft_s=0.0005, chunk_times=[0.0005], prompt_tokens=5, cached_tokens=0,
                      completion_tokens=1, finish_reason="length", usage=True)

    run = run_soak(send, lambda i: single(b"{}"), 2, [watched], requests=40, warmup=1)
    assert len(run.records) == 40 and sample_every(40) == 1
    counts = [n for n, _, _ in watched.points]
    assert counts[0] == 0 and counts[-1] == 40 and len(counts) == 41
    assert sample_every(500) == 5 and sample_every(5000) == 10


def test_a_soak_warms_up_with_one_request_alone_then_every_client():
    """A fresh server compiles its kernels on its first request: that one goes alone, so that
    the first requests sent together do not wait out a compilation (a GPU's first 8 did, 120 s)."""
    in_flight, peaks, lock = [0], [], threading.Lock()

    def send(body: bytes) -> Timing:
        with lock:
            in_flight[0] += 1
            peaks.append(in_flight[0])
        time.sleep(0.2)  # long enough that the warm-up's 4 requests overlap however late a thread starts
        with lock:
            in_flight[0] -= 1
        return Timing(time_s=0.02, ttft_s=0.01, chunk_times=[0.01], prompt_tokens=5, cached_tokens=0,
                      completion_tokens=1, finish_reason="length", usage=True)

    jobs: list[int] = []
    run = run_soak(send, lambda i: jobs.append(i) or single(b"{}"), 4, [], requests=8, warmup=1)
    assert len(run.records) == 8 and len(peaks) == 1 + 4 + 8
    assert peaks[0] == 1 and max(peaks[1:5]) > 1  # the first alone, the warm-up in flight
    assert sorted(jobs) == list(range(13))  # every job once: no request sent twice
