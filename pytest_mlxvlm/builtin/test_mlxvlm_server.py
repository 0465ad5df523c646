"""The built-in server suite (``--mlx-suite server``): the resolution sweep, a concurrency
sweep and (with ``server,cache``) the cache suite's steps, through streamed HTTP requests to
``mlx_vlm.server`` (or vllm-mlx's server, or ``--mlx-server-url``)."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_mlxvlm.builtin import test_mlxvlm_cache as cache_steps  # the steps, not collected here


def _check(result: Any, requests: int) -> None:
    # a regression the gate measured again to confirm adds a second set of requests
    assert len(result.samples) in (requests, 2 * requests)
    first = result.samples[0]
    for sample in result.samples:
        assert sample.ttft_s <= sample.time_s
        assert sample.prompt_tokens == first.prompt_tokens, \
            "prompt token counts changed between requests of the same input"


def test_server_generation(mlx_server_bench: Any) -> None:
    """One client: streamed greedy requests of a fixed length with the sweep's image."""
    result = mlx_server_bench.run()
    _check(result, result.rounds)


def test_server_concurrency(mlx_server_concurrency: Any) -> None:
    """N requests kept in flight (or N released together a round): aggregate tok/s and
    per-request latencies."""
    result = mlx_server_concurrency.run()
    if result.workload.get("duration_s"):  # a duration: as many requests as fitted
        assert result.samples and result.workload["server"]["requests"] == len(result.samples)
    else:
        _check(result, result.workload["requests"])


def test_server_rate(mlx_server_rate: Any) -> None:
    """Open-loop arrivals at one rate of ``--mlx-server-rates``: latencies, goodput, the queue."""
    result = mlx_server_rate.run()
    assert all(s.ttft_s <= s.time_s for s in result.samples)


def test_server_workload(mlx_server_workload: Any) -> None:
    """The requests and sessions of a ``--mlx-server-workload`` file, N at a time."""
    result = mlx_server_workload.run()
    assert all(s.ttft_s <= s.time_s for s in result.samples)


def test_server_soak(mlx_server_soak: Any) -> None:
    """``--mlx-server-soak`` requests with the server's memory sampled: a growing trend fails."""
    result = mlx_server_soak.run()
    assert result.workload["server"]["soak"]["verdict"] != "leak"


# -- the cache suite's steps through the server (mlx_server_cache: a server with its prefix cache on)

def test_server_cache_basic(mlx_server_cache: Any, mlx_cache_image: Any) -> None:
    """Same image and prompt, other prompt, other image, and back."""
    cache_steps.test_cache_basic(mlx_server_cache, mlx_cache_image)


def test_server_cache_different_images(mlx_server_cache: Any, mlx_cache_image: Any) -> None:
    cache_steps.test_cache_different_images(mlx_server_cache, mlx_cache_image)


@pytest.mark.parametrize("side", [224, 336, 512, 768])
def test_server_cache_resolutions(mlx_server_cache: Any, mlx_cache_image: Any, side: int) -> None:
    cache_steps.test_cache_resolutions(mlx_server_cache, mlx_cache_image, side)


def test_server_cache_same_size_images(mlx_server_cache: Any, mlx_cache_image: Any) -> None:
    """Two images of one size: identical placeholder tokens, so a cache keyed on token ids fails."""
    cache_steps.test_cache_same_size_images(mlx_server_cache, mlx_cache_image)


def test_server_cache_image_order(mlx_server_cache: Any, mlx_cache_image: Any) -> None:
    cache_steps.test_cache_image_order(mlx_server_cache, mlx_cache_image)


def test_server_cache_changed_bytes_same_path(mlx_server_cache: Any, mlx_cache_image: Any, tmp_path: Any) -> None:
    """The same file path with new bytes (sent as a path to a server started here)."""
    cache_steps.test_cache_changed_bytes_same_path(mlx_server_cache, mlx_cache_image, tmp_path)
