"""The cross-check (benchmarks/server_crosscheck.py) in CI: the plugin's server suite and an
independent client written with the ``openai`` package agree on one real mlx_vlm.server.

The issue's acceptance, aggregate tok/s and TTFT p50 within 10% at 1 and 4 clients, is what the
recorded run checks (docs/serving.md). This test runs the cheap form: the suite's load generator
and the openai client back to back per concurrency (``--mode interleaved``), repeats in
alternating order of 3 requests per client and 16 tokens, and holds the median of the repeats'
ratios to a wider bound, CI_TOLERANCE (30%): on this shared 2-core machine at a load average of
5-9, runs of that size deviated by up to 16% (and a single block of the session mode by 40%),
which is noise; a client that doubled or halved a figure (a token count, a TTFT from the wrong
origin) fails.

REPEATS (3) first; where a median is beyond the bound, MORE (2) repeats follow and the median of
all five decides. With 2 repeats the median was their mean, and one stalled block under CI's
parallel workers (a TTFT ratio of 2.4 beside 0.91) failed the test. A systematic error is in
every repeat, so more repeats never hide it; a stalled block is outvoted.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from benchmarks.server_crosscheck import METRICS, crosscheck, repeat_pairs, repeat_ratios

CI_TOLERANCE = 0.30
REPEATS = 3
MORE = 2
LEVELS = [1, 4]


@pytest.mark.slow
def test_the_plugin_agrees_with_the_openai_client(tmp_path):
    from pytest_mlxvlm.models.loading import resolve_path
    from pytest_mlxvlm.suites.server.process import ServerProcess

    folder = resolve_path("synthetic:tiny")
    process = ServerProcess(model=str(folder), timeout_s=300, log=tmp_path / "server.log")
    process.start()

    def rows_of(repeats: int, first: int) -> list[dict[str, Any]]:
        result = crosscheck(process.url, "synthetic:tiny", folder, LEVELS, requests_per_client=3, max_tokens=16,
                            repeats=repeats, mode="interleaved")
        return [{**r, "repeat": r["repeat"] + first} for r in result["rows"]]

    try:
        rows = rows_of(REPEATS, 0)
        if beyond(rows):
            rows += rows_of(MORE, REPEATS)
    finally:
        process.stop()
    repeats = len({r["repeat"] for r in rows})
    assert len(rows) == 2 * len(LEVELS) * repeats, "a (tool, clients, repeat) block is missing"
    assert {r["requests"] for r in rows} == {3, 12}
    assert {t for r in rows for t in r["tokens"]} == {16}, "the output length was not fixed"
    problems = [f"at {clients} clients the plugin's {metric} is "
                f"{statistics.median(repeat_ratios(rows, clients, metric)):.2f}x the openai client's (beyond "
                f"{CI_TOLERANCE:.0%}), the median of {repeats} repeats' plugin/openai: "
                + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in repeat_pairs(rows, clients, metric))
                for clients, metric in beyond(rows)]
    assert not problems, "\n".join(problems)


def beyond(rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """The (clients, metric) whose median ratio over the repeats is beyond CI_TOLERANCE."""
    return [(c, m) for c in LEVELS for m in METRICS
            if abs(statistics.median(repeat_ratios(rows, c, m)) - 1) > CI_TOLERANCE]
