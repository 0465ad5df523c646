"""The built-in image benchmark: one generation case per model and resolution."""

from __future__ import annotations

from typing import Any


def test_image_generation(mlx_bench: Any) -> None:
    """Measure a fixed-length greedy generation on the sweep's image; check the workload held."""
    result = mlx_bench.run()
    work = mlx_bench.settings.workload
    # a regression the gate measured again to confirm adds a second set of rounds
    assert len(result.samples) in (result.rounds, 2 * result.rounds)
    first = result.samples[0]
    assert first.image_tokens > 0, "the image produced no image tokens"
    for sample in result.samples:
        assert sample.generation_tokens == work.max_tokens
        assert (sample.prompt_tokens, sample.image_tokens) == (
            first.prompt_tokens,
            first.image_tokens,
        ), "prompt or image token counts changed between rounds of the same input"
        assert sample.ttft_s <= sample.time_s
