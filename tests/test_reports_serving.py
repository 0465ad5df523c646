"""The serving tables (reports/serving.py): the request-rate rows, the knee, and a sweep whose
verdicts are not monotone."""

from __future__ import annotations

from pytest_mlxvlm.reports.serving import rate_lines
from pytest_mlxvlm.results import CaseResult


def _rate(rate: float, saturated: bool) -> CaseResult:
    server = {"rate": rate, "arrivals": "poisson", "requests": 20, "request_rate": rate * 0.9,
              "aggregate_tps": rate * 60, "ttft_ms": {"p50": 200.0, "p95": 300.0},
              "itl_ms": {"p50": 12.0, "p95": 20.0}, "in_flight_first": 0, "in_flight_peak": 3,
              "queue_growth": 9.0 if saturated else 0.5, "saturated": saturated}
    return CaseResult(model="m", resolution="448x448", samples=[], workload={"server": server})


def _knee(lines: list[str]) -> list[str]:
    return [line for i, line in enumerate(lines) if line.startswith("Knee") or
            (line.startswith("  not monotone") and lines[i - 1].startswith("Knee"))]


def test_the_knee_lies_between_the_last_bounded_and_the_first_growing_rate():
    lines = rate_lines([_rate(2.0, True), _rate(0.5, False), _rate(1.0, False), _rate(4.0, True)])
    assert _knee(lines) == ["Knee: between 1 requests/s (queue bounded) and 2 requests/s (queue grows without bound)"]
    assert [line.split("|")[-2].strip() for line in lines if line.startswith("| ") and "/s" in line] == [
        "sustained", "sustained", "queue grows", "queue grows"]


def test_a_rate_that_held_above_one_that_grew_is_said_not_monotone():
    """As on an H100 with 10 s a rate: x0.75 grew, x1 read sustained, x1.25 grew."""
    lines = rate_lines([_rate(0.61, False), _rate(1.22, False), _rate(1.83, True), _rate(2.44, False),
                        _rate(3.05, True)])
    assert _knee(lines) == [
        "Knee: between 1.22 requests/s (queue bounded) and 1.83 requests/s (queue grows without bound)",
        "  not monotone: 2.44/s read sustained above a rate whose queue grew; too few arrivals per rate to "
        "place the knee surely: give each rate more --mlx-server-duration"]


def test_no_knee_when_every_rate_held_and_below_the_lowest_when_none_did():
    assert _knee(rate_lines([_rate(1.0, False), _rate(2.0, False)])) == [
        "Knee: not reached; the queue stayed bounded up to 2 requests/s"]
    assert _knee(rate_lines([_rate(1.0, True), _rate(2.0, True)])) == [
        "Knee: below 1 requests/s, the lowest rate measured: the queue grew at every rate"]
    assert rate_lines([]) == []


def _stopped(rate: float, backlog: bool) -> CaseResult:
    """A rate case that stopped early: cut for its backlog, or a request that failed (HTTP 500)."""
    case = _rate(rate, backlog)
    case.workload["server"].update(stopped="the server answered HTTP 500" if not backlog else "backlog",
                                   unfinished=7 if backlog else 0)
    return case


def test_a_failed_request_is_not_a_backlog_and_places_no_knee():
    lines = rate_lines([_stopped(2.0, backlog=False), _rate(1.0, False), _rate(4.0, False)])
    assert [line.split("|")[-2].strip() for line in lines if line.startswith("| ") and "/s" in line] == [
        "sustained", "failed: a request failed", "sustained"]
    assert _knee(lines) == ["Knee: not reached; the queue stayed bounded up to 4 requests/s"]
    lines = rate_lines([_stopped(2.0, backlog=True), _rate(1.0, False)])
    assert any(line.rstrip(" |").endswith("stopped: backlog") for line in lines)
    assert _knee(lines)[0].startswith("Knee: between 1 requests/s")
    assert _knee(rate_lines([_stopped(1.0, backlog=False)])) == [
        "Knee: not found; a request failed at every rate (the failures are above)"]
