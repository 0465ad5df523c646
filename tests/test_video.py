"""Video: clip configurations, clips written and checked, the video table, and the video suite
end to end on synthetic:tiny (its quick set, its cache steps, bad clips and the time limit).

Tests that generate with synthetic:tiny are marked slow; they use small frames and few tokens."""

import json
from pathlib import Path

import pytest

from pytest_mlxvlm.config.settings import (
    FULL_VIDEO,
    QUICK_VIDEO,
    MediaPlan,
    Resolution,
    SettingsError,
    parse_video_configs,
)
from pytest_mlxvlm.reports.mediareport import sampled_frames, video_section
from pytest_mlxvlm.results import CaseResult, Sample
from pytest_mlxvlm.suites.video import ClipFactory, VideoError, clip_info, video_id, write_synthetic_clip

SMALL = ["--mlx-model", "synthetic:tiny", "-p", "no:benchmark", "--mlx-video-size", "96x64",
         "--mlx-rounds", "2", "--mlx-max-tokens", "4", "--mlx-json", "out.json"]


def test_the_sweeps_are_vllm_mlx_s():
    assert len(FULL_VIDEO) == 10 and FULL_VIDEO[0] == (2, 0.5) and FULL_VIDEO[-1] == (64, 8.0)
    assert QUICK_VIDEO == ((4, 1.0), (8, 2.0), (16, 2.0))
    assert [video_id(f, fps) for f, fps in QUICK_VIDEO] == ["4f@1fps", "8f@2fps", "16f@2fps"]


def test_parse_video_configs():
    assert parse_video_configs("4@1, 16f@2fps 4@1") == ((4, 1.0), (16, 2.0))
    assert parse_video_configs("2@0.5") == ((2, 0.5),)


@pytest.mark.parametrize("text, message", [
    ("4@0", "fps must be above 0"), ("4@-2", "fps must be above 0"), ("0@1", "between 1 and"),
    ("16", "write FRAMES@FPS"), ("", "no clip configuration"), ("4@inf", "write FRAMES@FPS"),
])
def test_bad_video_configs_name_the_flag(text, message):
    with pytest.raises(SettingsError, match="--mlx-video-configs") as info:
        parse_video_configs(text)
    assert message in str(info.value)


def test_synthetic_clip_is_deterministic_and_readable(tmp_path):
    a = write_synthetic_clip(tmp_path / "a.mp4", Resolution(64, 48), 1.0, seed=3)
    b = write_synthetic_clip(tmp_path / "b.mp4", Resolution(64, 48), 1.0, seed=3)
    assert a.read_bytes() == b.read_bytes()
    info = clip_info(a)
    assert (info["frames"], info["fps"], info["width"], info["height"]) == (30, 30.0, 64, 48)


def test_clip_factory_writes_each_clip_once(tmp_path):
    clips = ClipFactory(tmp_path, MediaPlan(video_size=Resolution(64, 48), video_seconds=1.0))
    clip = clips(8, 2.0)
    assert (clip.max_frames, clip.fps, clip.id) == (8, 2.0, "8f@2fps")
    assert clips(4, 1.0).path == clip.path and clips(4, 1.0, seed=1).path != clip.path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic-64x48-1s-0.mp4", "synthetic-64x48-1s-1.mp4"]


def test_a_users_clip_is_reencoded_at_the_frame_size(tmp_path):
    source = write_synthetic_clip(tmp_path / "mine.mp4", Resolution(120, 80), 0.5)
    (tmp_path / "out").mkdir()
    clips = ClipFactory(tmp_path / "out", MediaPlan(video=source, video_size=Resolution(64, 32)))
    info = clip_info(Path(clips(4, 1.0).path))
    assert (info["frames"], info["width"], info["height"]) == (15, 64, 32)


def test_bad_clips_are_named(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    with pytest.raises(VideoError, match="notes.txt.*not a video OpenCV can read"):
        clip_info(text)
    import cv2

    empty = tmp_path / "empty.mp4"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"mp4v"), 30, (64, 64)).release()
    with pytest.raises(VideoError, match="empty.mp4"):
        clip_info(empty)
    with pytest.raises(VideoError, match="no such file"):
        clip_info(tmp_path / "missing.mp4")
    clips = ClipFactory(tmp_path, MediaPlan(video_size=Resolution(32, 32), video_seconds=0.2))
    with pytest.raises(VideoError, match="fps must be above 0, got 0"):
        clips(4, 0.0)
    with pytest.raises(VideoError, match="fps must be above 0, got -1"):
        clips(4, -1.0)


def _sample(time_s: float, tokens: int = 4) -> Sample:
    return Sample(time_s=time_s, ttft_s=time_s / 2, preprocess_s=0.01, prefill_s=time_s / 2, prompt_tokens=100,
                  cached_tokens=0, image_tokens=80, generation_tokens=tokens, prompt_tps=200.0,
                  generation_tps=50.0, end_to_end_tps=tokens / time_s, peak_memory=0.1)


def test_video_table_has_vllm_mlx_s_columns():
    video = {"fps": 2.0, "max_frames": 16, "clip_frames": 300, "clip_fps": 30.0, "frame_size": "640x360",
             "clip": "synthetic"}
    case = CaseResult(model="m", resolution="16f@2fps", samples=[_sample(1.0), _sample(1.2)],
                      workload={"video": video})
    lines = video_section([case])
    assert [c.strip() for c in lines[0].split("|")[1:5]] == ["Configuration", "Frames", "Video tok", "Time"]
    assert [c.strip() for c in lines[2].split("|")[1:4]] == ["16 frames @ 2fps", "16", "80"]
    assert "Clip: synthetic, 640x360, 300 frames at 30 fps" in "\n".join(lines)
    assert sampled_frames({**video, "max_frames": 64, "fps": 0.5}) == 5  # a 10 s clip at 0.5 fps


def test_a_bad_fps_stops_the_run_naming_the_flag(pytester: pytest.Pytester):
    result = pytester.runpytest("--mlx-suite", "video", "--mlx-video-configs", "4@0")
    result.stderr.fnmatch_lines(["*pytest-mlxvlm: --mlx-video-configs: bad clip configuration '4@0': fps must be "
                                 "above 0*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


@pytest.mark.slow
def test_quick_video_set_and_cache_steps(pytester: pytest.Pytester):
    """The quick set measured like images (warmup, rounds, fixed length, video tokens, report), and the
    clip cache steps through prompt-cache: a repeat is a MISS, another clip or sampling never answers."""
    result = pytester.runpytest("--mlx-suite", "video", "--quick", "--mlx-cache-engine", "prompt-cache", *SMALL)
    result.assert_outcomes(passed=3, failed=1)  # prompt-cache reuses no identical request (docs/cache.md)
    result.stdout.fnmatch_lines(["*mlxvlm: synthetic:tiny on *, video*", "| Configuration*",
                                 "| 4 frames @ 1fps *", "| 8 frames @ 2fps *", "| 16 frames @ 2fps *"])
    doc = json.loads((pytester.path / "out.json").read_text())
    cases = [r for r in doc["results"] if r["side"] == "video"]
    assert [c["resolution"] for c in cases] == ["4f@1fps", "8f@2fps", "16f@2fps"]
    tokens = [c["summary"]["image_tokens"]["median"] for c in cases]
    assert 0 < tokens[0] < tokens[1] < tokens[2]  # more frames, more video tokens
    for case in cases:
        assert len(case["samples"]) == 2 and len(case["warmup_samples"]) == 1
        assert {s["generation_tokens"] for s in case["samples"]} == {4}
        assert case["workload"]["video"]["frame_size"] == "96x64"
        assert case["workload"]["image"] == "none"  # not the session's --mlx-image: its baseline gates without it
    steps = {s["step"]: s for rec in doc["cache"] for s in rec["steps"]}
    assert steps["other fps"]["actual"] == "MISS" and steps["other frame count"]["actual"] == "MISS"
    assert steps["same path, new bytes"]["actual"] == "MISS"
    assert all(s["correct"] is not False for s in steps.values())


@pytest.mark.slow
def test_bad_clips_and_the_time_limit_fail_their_cases_only(pytester: pytest.Pytester):
    pytester.makepyfile(test_mine="""
        def test_text_only(mlx_bench):
            mlx_bench.run(image=None, rounds=1, warmup=0)
    """)
    (pytester.path / "notes.txt").write_text("not a video")
    result = pytester.runpytest("--mlx-suite", "video", "--mlx-video-configs", "4@1", "--mlx-video", "notes.txt",
                                "-k", "generation or text_only", "--mlx-resolutions", "224x224", *SMALL)
    result.assert_outcomes(passed=1, errors=1)  # the clip fixture fails; the text-only case is measured
    result.stdout.fnmatch_lines(["*cannot open video '*notes.txt': not a video OpenCV can read*"])
    import cv2

    cv2.VideoWriter(str(pytester.path / "empty.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, (64, 64)).release()
    result = pytester.runpytest("--mlx-suite", "video", "--mlx-video-configs", "4@1,8@2", "--mlx-video", "empty.mp4",
                                "-k", "generation", *SMALL)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*cannot open video '*empty.mp4': *a clip with no frames*"])
    result = pytester.runpytest("--mlx-suite", "video", "--mlx-video-configs", "4@1", "--mlx-worker-timeout",
                                "0.001", "-k", "generation or text_only", "--mlx-resolutions", "224x224", *SMALL)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*synthetic:tiny 4f@1fps: one generation took * s, beyond the 0.001 s limit "
                                 "(--mlx-worker-timeout)*"])
