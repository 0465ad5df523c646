"""The built-in batch suite (``--mlx-suite batch``): ``mlx_vlm.batch_generate`` at each batch size
with images of one size and of mixed sizes, ``group_by_shape`` on and off (the seed's advice:
"batch similar-sized images for consistent throughput")."""

from __future__ import annotations

from typing import Any


def test_batch_generation(mlx_batch_bench: Any) -> None:
    """Measure batches of fixed-length greedy requests; check every request kept its length."""
    result = mlx_batch_bench.run()
    work = mlx_batch_bench.settings.workload
    size = mlx_batch_bench.case.size
    assert len(result.samples) in (result.rounds, 2 * result.rounds)
    first = result.samples[0]
    for sample in result.samples:
        assert sample.generation_tokens == work.max_tokens * size
        assert sample.prompt_tokens == first.prompt_tokens, "prompt token counts changed between rounds"
