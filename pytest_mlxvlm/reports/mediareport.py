"""The video and batch tables, and the answer to "batch similar-sized images" (pure functions)."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from ..results import CaseResult
from .report import render_table

VIDEO_COLUMNS = ("Configuration", "Frames", "Video tok", "Time", "Tokens", "Speed", "TTFT", "Prefill",
                 "Decode", "Peak mem", "Spread")
BATCH_COLUMNS = ("Batch", "Images", "group_by_shape", "Time = latency", "Tokens", "Aggregate", "Per request",
                 "Prefill", "Decode", "Peak mem", "Spread")


def _medians(result: CaseResult) -> dict[str, float]:
    return {m: result.summary(m).median for m in ("time_s", "generation_tokens", "end_to_end_tps", "ttft_s",
                                                  "prompt_tps", "generation_tps", "peak_memory", "image_tokens")}


def _spread(result: CaseResult) -> str:
    speed = result.summary("end_to_end_tps")
    return f"±{speed.spread * 100:.1f}% (n={speed.n})"


def sampled_frames(video: dict[str, Any]) -> int:
    """The frames vllm-mlx's table states: the clip's length x fps, at most max_frames."""
    clip_frames, clip_fps = int(video.get("clip_frames") or 0), float(video.get("clip_fps") or 0.0)
    seconds = clip_frames / clip_fps if clip_fps > 0 else 0.0
    return min(int(video.get("max_frames") or 0), max(1, math.floor(seconds * float(video.get("fps") or 0.0))))


def video_section(results: Sequence[CaseResult]) -> list[str]:
    """The video table, one row per frames@fps case (vllm-mlx's columns and the plugin's)."""
    rows = []
    for r in results:
        video, med = r.workload.get("video") or {}, _medians(r)
        rows.append([f"{video.get('max_frames', '?')} frames @ {video.get('fps', 0):g}fps", str(sampled_frames(video)),
                     f"{med['image_tokens']:.0f}", f"{med['time_s']:.2f}s", f"{med['generation_tokens']:.0f}",
                     f"{med['end_to_end_tps']:.1f} tok/s", f"{med['ttft_s'] * 1000:.0f}ms",
                     f"{med['prompt_tps']:.0f} tok/s", f"{med['generation_tps']:.1f} tok/s",
                     f"{med['peak_memory']:.2f}GB", _spread(r)])
    lines = render_table(VIDEO_COLUMNS, rows)
    if results:
        video = results[0].workload.get("video") or {}
        fastest = max(results, key=lambda r: r.summary("end_to_end_tps").median)
        slowest = min(results, key=lambda r: r.summary("end_to_end_tps").median)
        memory = [r.summary("peak_memory").median for r in results]
        lines += ["", f"Clip: {video.get('clip', '?')}, {video.get('frame_size', '?')}, "
                      f"{video.get('clip_frames', '?')} frames at {video.get('clip_fps', 0):g} fps; "
                      f"Video tok: the clip's placeholder tokens in the prompt",
                  f"Fastest {fastest.resolution} ({fastest.summary('end_to_end_tps').median:.1f} tok/s), slowest "
                  f"{slowest.resolution} ({slowest.summary('end_to_end_tps').median:.1f} tok/s); peak memory "
                  f"{min(memory):.2f} to {max(memory):.2f} GB"]
    return lines


def batch_section(results: Sequence[CaseResult]) -> list[str]:
    """The batch table and, per batch size, similar against mixed sizes."""
    rows = []
    for r in results:
        batch, med = r.workload.get("batch") or {}, _medians(r)
        size = int(batch.get("size") or 1)
        sizes = sorted(set(batch.get("resolutions") or []), key=lambda s: int(s.partition("x")[0]))
        rows.append([str(size), ("similar " if not batch.get("mixed") else "mixed ") + "/".join(sizes),
                     "on" if batch.get("group_by_shape") else "off", f"{med['time_s']:.2f}s",
                     f"{med['generation_tokens']:.0f}", f"{med['end_to_end_tps']:.1f} tok/s",
                     f"{med['end_to_end_tps'] / size:.1f} tok/s", f"{med['prompt_tps']:.0f} tok/s",
                     f"{med['generation_tps']:.1f} tok/s", f"{med['peak_memory']:.2f}GB", _spread(r)])
    lines = render_table(BATCH_COLUMNS, rows)
    lines += ["", "One round = one mlx_vlm.batch_generate call: Time is every request's latency (the call returns "
                  "all answers at once); Aggregate = all requests' tokens / Time; Spread = IQR / median of "
                  "Aggregate over the rounds (steadiness)"]
    return lines + similar_vs_mixed(results)


def similar_vs_mixed(results: Sequence[CaseResult]) -> list[str]:
    """Per batch size: how much faster and steadier similar sizes are than the better mixed batch."""
    by_size: dict[int, dict[str, CaseResult]] = {}
    for r in results:
        batch = r.workload.get("batch") or {}
        kind = "similar" if not batch.get("mixed") else "grouped" if batch.get("group_by_shape") else "ungrouped"
        by_size.setdefault(int(batch.get("size") or 1), {})[kind] = r
    lines = []
    speed: Callable[[CaseResult], float] = lambda r: r.summary("end_to_end_tps").median
    spread: Callable[[CaseResult], float] = lambda r: r.summary("end_to_end_tps").spread
    for size, kinds in sorted(by_size.items()):
        similar = kinds.get("similar")
        mixed = [kinds[k] for k in ("grouped", "ungrouped") if k in kinds]
        if similar is None or not mixed:
            continue
        best = max(mixed, key=speed)
        change = speed(similar) / speed(best) - 1 if speed(best) else 0.0
        how = "group_by_shape on" if best is kinds.get("grouped") else "group_by_shape off"
        lines.append(f"Batch of {size}: similar sizes {speed(similar):.1f} tok/s (±{spread(similar) * 100:.1f}%) "
                     f"vs mixed {speed(best):.1f} tok/s (±{spread(best) * 100:.1f}%, {how}): similar "
                     f"{abs(change) * 100:.0f}% {'faster' if change >= 0 else 'slower'}, "
                     f"{'steadier' if spread(similar) < spread(best) else 'not steadier'}")
    return lines


SECTIONS: dict[str, Callable[[Sequence[CaseResult]], list[str]]] = {"video": video_section, "batch": batch_section}
