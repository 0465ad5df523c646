"""A memory soak (no pytest here): many requests through a server while its memory is sampled,
and a verdict on the trend: growth per 100 requests with its 95% interval (Theil-Sen), a leak
when the whole interval lies above the threshold.

Where the memory comes from, in order: the server's ``/metrics`` when it exposes current memory
(Prometheus ``process_resident_memory_bytes``, MLX's active memory as vllm-mlx's
``vllm_mlx_metal_memory_bytes{kind="active"}``), else the resident memory (RSS) of the process
started here and its children, else mlx_vlm.server's JSON ``/metrics`` peak (a high-water mark,
which only MLX allocations move). A gauge that reads 0 when the soak starts is left out."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .load import Job, LoadRun, RequestRecord, Send, run_continuous
from .process import get

WARMUP_FRACTION = 0.2  # the first fifth of the soak is left out of the fit (allocators and caches fill)
MIN_POINTS = 8
_PROM_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.M)


@dataclass
class MemorySeries:
    """One memory figure of the server over the soak."""

    name: str  # e.g. "RSS of pid 1234 and its children", "metrics process_resident_memory_bytes"
    kind: str  # "current" (can fall) or "high-water" (a peak: it only rises)
    read: Callable[[], float | None] = field(repr=False)  # MB now, None when unreadable
    points: list[tuple[int, float, float]] = field(default_factory=list)  # (requests, seconds, MB)


def _metrics_text(url: str, timeout_s: float) -> str | None:
    body = get(url, "/metrics", timeout_s)
    return None if body is None else body.decode("utf-8", "replace")


def server_in_flight(url: str, timeout_s: float = 5.0) -> int | None:
    """Requests the server itself counts in flight (mlx_vlm.server's JSON ``/metrics``
    ``summary.in_flight``), or None when it does not say."""
    text = _metrics_text(url, timeout_s)
    try:
        value = (json.loads(text or "").get("summary") or {}).get("in_flight")
    except (ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, (int, float)) else None


def prometheus_memory(text: str) -> dict[str, float]:
    """Current-memory gauges of a Prometheus exposition, in MB: resident memory, and MLX's
    active memory (``*memory_bytes{kind="active"}``, ``*active_memory_bytes``)."""
    out: dict[str, float] = {}
    for name, labels, value in _PROM_LINE.findall(text):
        labels = labels or ""
        wanted = (name == "process_resident_memory_bytes"
                  or (name.endswith("memory_bytes") and 'kind="active"' in labels)
                  or name.endswith("active_memory_bytes"))
        if wanted:
            out[name + labels] = float(value) / 1e6
    return out


def _json_peak(text: str) -> float | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    entries = [data.get("latest"), *(data.get("recent") or [])]
    found = [float(e["peak_memory_gb"]) * 1000 for e in entries
             if isinstance(e, dict) and e.get("peak_memory_gb")]
    return max(found) if found else None


def _rss(pid: int) -> float | None:
    import psutil

    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        return None
    return total / 1e6


def memory_series(url: str, pid: int | None, timeout_s: float = 10.0) -> tuple[list[MemorySeries], str]:
    """The memory figures a soak can sample on this server, and why these (or why none)."""
    text = _metrics_text(url, timeout_s)
    # a gauge that reads 0 measures nothing (vllm-mlx's Metal gauges on a machine without Metal)
    gauges = {k: v for k, v in (prometheus_memory(text) if text else {}).items() if v > 0}
    if gauges:
        def gauge(key: str) -> Callable[[], float | None]:
            return lambda: prometheus_memory(_metrics_text(url, timeout_s) or "").get(key)
        return ([MemorySeries(f"/metrics {key}", "current", gauge(key)) for key in gauges],
                "the server's /metrics")
    if pid is not None:
        return [MemorySeries(f"RSS of the server (pid {pid}) and its children", "current",
                             lambda: _rss(pid))], "the process's RSS (its /metrics has no current memory)"
    if text and _json_peak(text) is not None:
        return ([MemorySeries("/metrics peak_memory_gb (a high-water mark)", "high-water",
                              lambda: _json_peak(_metrics_text(url, timeout_s) or ""))],
                "mlx_vlm.server's /metrics peak (a high-water mark: only MLX allocations move it; "
                "start the server here for its RSS)")
    return [], (f"the server at {url} reports no memory (no /metrics gauge of it) and was not "
                "started here, so its process cannot be read")


@dataclass
class Trend:
    """Growth of one series per 100 requests, with its 95% interval, and the verdict."""

    series: str
    growth_mb: float  # per 100 requests
    low_mb: float
    high_mb: float
    threshold_mb: float
    points: int
    verdict: str  # "leak", "no leak", "inconclusive", "too few points"
    start_mb: float = 0.0
    end_mb: float = 0.0

    @property
    def leak(self) -> bool:
        return self.verdict == "leak"

    def line(self) -> str:
        if self.verdict == "too few points":
            return f"{self.series}: {self.points} samples after the warm-up, too few for a trend"
        return (f"{self.series}: {self.start_mb:.1f} -> {self.end_mb:.1f} MB; growth "
                f"{self.growth_mb:+.2f} MB per 100 requests (95% interval {self.low_mb:+.2f} to "
                f"{self.high_mb:+.2f}; threshold {self.threshold_mb:g}): {self.verdict}")


def trend(points: list[tuple[int, float, float]], threshold_mb: float, series: str = "") -> Trend:
    """Theil-Sen slope of MB against requests over the samples after the first WARMUP_FRACTION
    of the soak: a leak when the interval's low end exceeds ``threshold_mb`` per 100 requests;
    no leak when its high end does not; else inconclusive."""
    from scipy import stats as sps

    total = max((n for n, _, _ in points), default=0)
    kept = [(n, mb) for n, _, mb in points if n >= WARMUP_FRACTION * total]
    if len(kept) < MIN_POINTS or len({n for n, _ in kept}) < 2:
        return Trend(series, 0.0, 0.0, 0.0, threshold_mb, len(kept), "too few points")
    xs = [float(n) for n, _ in kept]
    ys = [mb for _, mb in kept]
    slope, _, low, high = sps.theilslopes(ys, xs, alpha=0.95)
    growth, low, high = slope * 100, low * 100, high * 100
    verdict = "leak" if low > threshold_mb else "no leak" if high <= threshold_mb else "inconclusive"
    return Trend(series, float(growth), float(low), float(high), threshold_mb, len(kept), verdict,
                 start_mb=ys[0], end_mb=ys[-1])


def overall(trends: list[Trend]) -> str:
    """The soak's verdict over its series, whatever their order: a leak in any; else
    inconclusive in any; else no leak where some series had enough points to say so."""
    verdicts = {t.verdict for t in trends}
    for verdict in ("leak", "inconclusive", "no leak", "too few points"):
        if verdict in verdicts:
            return verdict
    return "no samples"


def sample_every(requests: int | None) -> int:
    """Requests between memory samples: about 100 samples over a soak of known length."""
    return max(1, min(10, (requests or 500) // 100))


def run_soak(send: Send, job_at: Callable[[int], Job], clients: int, series: list[MemorySeries], *,
             requests: int | None = None, duration_s: float | None = None, warmup: int = 1,
             abort: Callable[[], Any] = lambda: None) -> LoadRun:
    """Continuous load of ``requests`` jobs (or ``duration_s``) with the memory of each series
    sampled before the first measured request and after every ``sample_every`` completions.
    The warm-up (not kept): one request alone, then ``warmup`` per client, ``clients`` in flight;
    none with ``warmup`` 0."""
    every = sample_every(requests)
    lock = threading.Lock()
    start = time.perf_counter()

    def sample(done: int) -> None:
        with lock:
            for s in series:
                value = s.read()
                if value is not None:
                    s.points.append((done, time.perf_counter() - start, value))

    def on_done(_: RequestRecord, done: int) -> None:
        if done % every == 0:
            sample(done)

    skip = 0
    if warmup:
        # one request alone first: a fresh server compiles its kernels on it (on a GPU, minutes
        # that would otherwise land on the first of `clients` requests sent together)
        run_continuous(send, job_at, 1, requests=1, abort=abort)
        run_continuous(send, lambda i: job_at(1 + i), clients, requests=clients * warmup, abort=abort)
        skip = 1 + clients * warmup
    start = time.perf_counter()
    sample(0)
    run = run_continuous(send, lambda i: job_at(skip + i), clients, requests=requests,
                         duration_s=duration_s, abort=abort, on_done=on_done)
    done = sum(r.ok for r in run.records)
    if done % every:
        sample(done)
    return run
