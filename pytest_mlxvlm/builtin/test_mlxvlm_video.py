"""The built-in video suite (``--mlx-suite video``): vllm-mlx's frames x fps sweep on one clip,
measured like images, and the prefix-cache expectations for clips through the engines.

Cache semantics (vllm-mlx's video cache: key = clip + fps + max frames + prompt): the same clip
and prompt HIT, also when returning to them; another fps or frame count MISS; another prompt
MISS; the same path with new bytes MISS. Each step is checked against a cold run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

P1 = "Describe this video."
P2 = "What moves in this video?"


def test_video_generation(mlx_video_bench: Any) -> None:
    """Measure a fixed-length greedy generation on the sweep's clip; check the workload held."""
    result = mlx_video_bench.run()
    work = mlx_video_bench.settings.workload
    # a regression the gate measured again to confirm adds a second set of rounds
    assert len(result.samples) in (result.rounds, 2 * result.rounds)
    first = result.samples[0]
    assert first.image_tokens > 0, "the clip produced no video tokens"
    for sample in result.samples:
        assert sample.generation_tokens == work.max_tokens
        assert (sample.prompt_tokens, sample.image_tokens) == (first.prompt_tokens, first.image_tokens), \
            "prompt or video token counts changed between rounds of the same clip"
        assert sample.ttft_s <= sample.time_s


def test_video_cache(mlx_cache: Any, mlx_video_clip: Any, tmp_path: Path) -> None:
    clip = mlx_video_clip(8, 1.0)  # 8 frames at 1 fps of the 10 s clip
    mlx_cache.step("first", clip, P1, "MISS", "8 frames at 1 fps, prompt 1: nothing cached yet")
    mlx_cache.step("repeat", clip, P1, "HIT", "the same clip, fps, frames and prompt")
    mlx_cache.step("other fps", mlx_video_clip(8, 0.5), P1, "MISS", "the same clip at 0.5 fps (4 frames)")
    mlx_cache.step("other frame count", mlx_video_clip(4, 1.0), P1, "MISS", "the same clip, 4 frames at 1 fps")
    mlx_cache.step("other prompt", clip, P2, "MISS", "the same clip and sampling, prompt 2")
    mlx_cache.step("return", clip, P1, "HIT", "back to 8 frames at 1 fps, prompt 1")
    path = tmp_path / "clip.mp4"
    shutil.copyfile(mlx_video_clip.path(seed=1), path)
    mlx_cache.step("new clip", mlx_video_clip(8, 1.0, path=path), P1, "MISS", "clip.mp4")
    shutil.copyfile(mlx_video_clip.path(seed=2), path)
    mlx_cache.step("same path, new bytes", mlx_video_clip(8, 1.0, path=path), P1, "MISS",
                   "clip.mp4 overwritten with another clip")
    mlx_cache.check()
