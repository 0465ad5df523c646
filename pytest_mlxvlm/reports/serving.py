"""What the serving cases add under the server table: the request-rate table with the knee and
goodput, the workloads' breakdown by image size and turn, and the memory soak's verdict."""

from __future__ import annotations

from typing import Any, Sequence

from ..results import CaseResult
from .report import render_table

RATE_COLUMNS = ("Rate", "Arrivals", "Requests", "Achieved", "Aggregate", "TTFT p50/p95", "ITL p50/p95",
                "In flight first/peak", "Queue growth", "Goodput", "Verdict")


def _server(r: CaseResult) -> dict[str, Any]:
    return r.workload.get("server") or {}


def _ms(stats: dict[str, float], *qs: str) -> str:
    return "/".join(f"{stats.get(q, 0.0):.0f}" for q in qs) + "ms"


def slo_text(slo_ms: dict[str, float]) -> str:
    names = {"ttft": "TTFT", "itl": "ITL p95", "tpot": "TPOT", "e2e": "end-to-end"}
    return ", ".join(f"{names.get(k, k)} <= {v:g} ms" for k, v in slo_ms.items())


def rate_lines(results: Sequence[CaseResult]) -> list[str]:
    """The rate cases of one model, slowest rate first, and the knee."""
    cases = sorted((r for r in results if "rate" in _server(r)), key=lambda r: _server(r)["rate"])
    if not cases:
        return []
    rows, points = [], []
    for r in cases:
        info = _server(r)
        good = info.get("goodput")
        failed = bool(info.get("stopped")) and not info.get("unfinished")  # unfinished: cut for a backlog
        saturated = bool(info.get("saturated"))
        if not failed:  # a failed request says nothing of the queue: no point of the knee
            points.append((float(info["rate"]), saturated))
        verdict = ("failed: a request failed" if failed else "stopped: backlog" if info.get("stopped")
                   else "queue grows" if saturated else "sustained")
        rows.append([
            f"{info['rate']:.3g}/s" + (f" (x{info['capacity_fraction']:g})" if "capacity_fraction" in info else ""),
            str(info.get("arrivals", "")), f"{info.get('requests', 0)}" + (
                f" (+{info['unfinished']} cut)" if info.get("unfinished") else ""),
            f"{info.get('request_rate', 0.0):.3g}/s", f"{info.get('aggregate_tps', 0.0):.1f} tok/s",
            _ms(info.get("ttft_ms") or {}, "p50", "p95"),
            "/".join(f"{(info.get('itl_ms') or {}).get(q, 0.0):.1f}" for q in ("p50", "p95")) + "ms",
            f"{info.get('in_flight_first', 0)}/{info.get('in_flight_peak', 0)}",
            f"{info.get('queue_growth', 0.0):+.1f}",
            f"{good['requests_per_s']:.3g}/s ({good['fraction'] * 100:.0f}%)" if good else "-",
            verdict,
        ])
    lines = ["", "Request rates (open loop: each request sent at its arrival time whatever the server's "
             "state; Queue growth: the trend of the requests in flight over the arrivals):"]
    lines += render_table(RATE_COLUMNS, rows)
    sustained = [rate for rate, sat in points if not sat]
    first_sat = next((rate for rate, sat in points if sat), None)
    if not points:
        lines.append("Knee: not found; a request failed at every rate (the failures are above)")
    elif first_sat is None:
        lines.append(f"Knee: not reached; the queue stayed bounded up to {points[-1][0]:.3g} requests/s")
    elif not [rate for rate in sustained if rate < first_sat]:
        lines.append(f"Knee: below {first_sat:.3g} requests/s, the lowest rate measured: the queue grew "
                     "at every rate")
    else:
        below = max(rate for rate in sustained if rate < first_sat)
        lines.append(f"Knee: between {below:.3g} requests/s (queue bounded) and {first_sat:.3g} "
                     "requests/s (queue grows without bound)")
    above = [rate for rate in sustained if first_sat is not None and rate > first_sat]
    if above:
        lines.append(f"  not monotone: {', '.join(f'{rate:.3g}/s' for rate in above)} read sustained above a rate "
                     "whose queue grew; too few arrivals per rate to place the knee surely: give each rate "
                     "more --mlx-server-duration")
    capacity = next((_server(r)["capacity"] for r in cases if "capacity" in _server(r)), None)
    if capacity:
        lines.append(f"Capacity (for the sweep): {capacity['requests_per_s']:.3g} requests/s at "
                     f"{capacity['clients']} clients kept in flight ({capacity['requests']} requests)")
    slo = next((_server(r)["goodput"]["slo_ms"] for r in cases if _server(r).get("goodput")), None)
    if slo:
        lines.append(f"Goodput: requests per second that met every objective ({slo_text(slo)})")
    return lines


def workload_lines(results: Sequence[CaseResult]) -> list[str]:
    """Per workload case: TTFT by image sizes, and by turn for sessions (cached tokens)."""
    lines: list[str] = []
    for r in results:
        info = _server(r)
        if "by_images" not in info:
            continue
        lines += ["", f"Workload {r.workload.get('workload')} with {info.get('clients')} clients "
                  f"({info.get('requests')} requests, {r.workload.get('image')}):"]
        rows = [[name, str(g["requests"]), f"{g['prompt_tokens']:.0f}", f"{g['cached_tokens']:.0f}",
                 f"{g['ttft_p50_ms']:.0f}ms", f"{g['e2e_p50_ms']:.0f}ms"]
                for name, g in sorted(info["by_images"].items())]
        lines += render_table(("Images", "Requests", "Prompt tok", "Cached tok", "TTFT p50", "E2E p50"), rows)
        turns = info.get("by_turn")
        if turns:
            rows = [[name, str(g["requests"]), f"{g['prompt_tokens']:.0f}", f"{g['cached_tokens']:.0f}",
                     f"{g['ttft_p50_ms']:.0f}ms"] for name, g in sorted(turns.items(), key=lambda x: int(x[0]))]
            lines += render_table(("Turn", "Requests", "Prompt tok", "Cached tok", "TTFT p50"), rows)
    return lines


def soak_lines(results: Sequence[CaseResult]) -> list[str]:
    lines: list[str] = []
    for r in results:
        info = _server(r)
        soak = info.get("soak")
        if not soak:
            continue
        lines += ["", f"Memory soak: {info.get('requests')} requests, {info.get('clients')} in flight, "
                  f"{info.get('duration_s', 0.0):.0f} s; memory from {info.get('memory_source')}; the first "
                  f"fifth left out of the trend; threshold {soak['threshold_mb_per_100']:g} MB per 100 requests:"]
        lines += [f"  {t['line']}" for t in soak["trends"]]
        lines.append(f"  verdict: {soak['verdict']}")
    return lines


def serving_lines(results: Sequence[CaseResult]) -> list[str]:
    """Everything the serving cases add under the server table of one model."""
    return rate_lines(results) + workload_lines(results) + soak_lines(results)
