"""What a load run shows (no pytest here): percentiles of TTFT, ITL, TPOT and end-to-end, the
aggregate over the run's duration, goodput against objectives, whether the queue grew without
bound, and a breakdown by what the requests held."""

from __future__ import annotations

from typing import Any

from .client import Timing, percentiles
from .load import LoadRun, tpot

QUANTILES = (50, 90, 95, 99)


def good(t: Timing, slo: dict[str, float]) -> bool:
    """Whether one request met every objective (seconds): ttft, itl (its own gaps' p95),
    tpot, e2e; as vLLM's bench serve counts goodput."""
    checks = {"ttft": t.ttft_s, "e2e": t.time_s, "tpot": tpot(t),
              "itl": percentiles(t.itl, (95,))["p95"] if t.itl else 0.0}
    return all(checks[name] <= limit for name, limit in slo.items())


def saturation(run: LoadRun) -> dict[str, Any]:
    """Does the queue grow without bound? The requests in flight at each arrival, their trend
    (Theil-Sen slope with its 95% interval) and growth over the arrivals; saturated when that
    growth is at least max(2, 10% of the requests) with the slope's interval above 0. Also the
    TTFT of the last quarter of the arrivals against the first."""
    from scipy import stats as sps

    points = run.in_flight
    out: dict[str, Any] = {"in_flight_first": points[0][1] if points else 0,
                           "in_flight_peak": max((n for _, n in points), default=0)}
    ttfts = [r.timing.ttft_s for r in sorted(run.records, key=lambda r: r.index) if r.ok and r.timing]
    quarter = max(1, len(ttfts) // 4)
    if len(ttfts) >= 4:
        head = sorted(ttfts[:quarter])[quarter // 2]
        tail = sorted(ttfts[-quarter:])[quarter // 2]
        out["ttft_growth"] = tail / head if head else 0.0
    if len(points) < 4 or len({t for t, _ in points}) < 2:
        out.update(queue_slope_per_s=0.0, queue_growth=0.0, saturated=False)
        return out
    xs = [t for t, _ in points]
    ys = [float(n) for _, n in points]
    slope, _, low, high = sps.theilslopes(ys, xs, alpha=0.95)
    growth = slope * (xs[-1] - xs[0])
    needed = max(2.0, 0.1 * len(run.records))
    out.update(queue_slope_per_s=float(slope), queue_slope_interval=[float(low), float(high)],
               queue_growth=float(growth), saturated=bool(low > 0 and growth >= needed),
               growth_needed=needed)
    return out


def summarize_run(run: LoadRun, max_tokens: int, slo: dict[str, float] | None = None) -> dict[str, Any]:
    """A run's figures beside its samples: percentiles (p50/p90/p95/p99) of TTFT, ITL (every
    gap of every request), TPOT and end-to-end; aggregate tok/s = tokens / duration (the first
    request sent to the last one's end); request throughput; goodput against ``slo``."""
    timings = run.timings
    itl = [g for t in timings for g in t.itl]
    tokens = sum(t.completion_tokens for t in timings)
    short = [t for t in timings if t.completion_tokens != max_tokens]
    ms = lambda values: {k: v * 1000 for k, v in percentiles(values, QUANTILES).items()}  # noqa: E731
    duration = run.duration_s
    out: dict[str, Any] = {
        "load": run.mode,
        "requests": len(timings),
        "duration_s": duration,
        "aggregate_tps": tokens / duration if duration else 0.0,
        "request_rate": len(timings) / duration if duration else 0.0,
        "ttft_ms": ms([t.ttft_s for t in timings]),
        "itl_ms": ms(itl),
        "tpot_ms": ms([tpot(t) for t in timings if t.completion_tokens > 1]),
        "e2e_ms": ms([t.time_s for t in timings]),
        "fixed_length": not short,
        "short_requests": len(short),
        "usage_reported": all(t.usage for t in timings),
        "finish_reasons": sorted({str(t.finish_reason) for t in timings}),
        "server_peak_memory_gb": max((float(t.server_timings.get("peak_memory") or 0.0) for t in timings),
                                     default=0.0),
    }
    if run.mode in ("continuous", "synchronized-rounds"):
        out["clients"] = run.clients
    if run.mode == "synchronized-rounds" and run.round_walls:
        per_round = tokens / len(run.round_walls)
        out["aggregate_tps"] = per_round / (sum(run.round_walls) / len(run.round_walls))
        out["round_wall_s"] = run.round_walls
    if run.mode == "open-loop":
        out.update(rate=run.rate, arrivals=run.arrivals, arrival_window_s=run.arrival_window_s,
                   **saturation(run))
    if slo:
        ok = [t for t in timings if good(t, slo)]
        out["goodput"] = {
            "slo_ms": {k: v * 1000 for k, v in slo.items()},
            "good_requests": len(ok),
            "fraction": len(ok) / len(timings) if timings else 0.0,
            "requests_per_s": len(ok) / duration if duration else 0.0,
            "tokens_per_s": sum(t.completion_tokens for t in ok) / duration if duration else 0.0,
        }
    return out


def breakdown(run: LoadRun, key: str) -> dict[str, dict[str, float]]:
    """Per value of a request's ``meta[key]`` (image sizes, turn): requests, TTFT and end-to-end
    medians (ms), mean prompt and cached tokens."""
    groups: dict[str, list[Timing]] = {}
    for r in run.records:
        if r.ok and r.timing is not None and key in r.meta:
            groups.setdefault(str(r.meta[key]), []).append(r.timing)
    return {name: {"requests": len(ts),
                   "ttft_p50_ms": percentiles([t.ttft_s for t in ts], (50,))["p50"] * 1000,
                   "e2e_p50_ms": percentiles([t.time_s for t in ts], (50,))["p50"] * 1000,
                   "prompt_tokens": sum(t.prompt_tokens for t in ts) / len(ts),
                   "cached_tokens": sum(t.cached_tokens for t in ts) / len(ts)}
            for name, ts in groups.items()}
