"""The built-in server suite (``--mlx-suite server``): the resolution sweep and a concurrency
sweep, through streamed HTTP requests to ``mlx_vlm.server`` (or ``--mlx-server-url``)."""

from __future__ import annotations

from typing import Any


def _check(result: Any, clients: int) -> None:
    # a regression the gate measured again to confirm adds a second set of rounds
    assert len(result.samples) in (result.rounds * clients, 2 * result.rounds * clients)
    first = result.samples[0]
    for sample in result.samples:
        assert sample.ttft_s <= sample.time_s
        assert sample.prompt_tokens == first.prompt_tokens, \
            "prompt token counts changed between requests of the same input"


def test_server_generation(mlx_server_bench: Any) -> None:
    """One client: streamed greedy requests of a fixed length with the sweep's image."""
    _check(mlx_server_bench.run(), 1)


def test_server_concurrency(mlx_server_concurrency: Any) -> None:
    """N clients at once, N requests a round: aggregate tok/s and per-request latencies."""
    _check(mlx_server_concurrency.run(), mlx_server_concurrency.clients)
