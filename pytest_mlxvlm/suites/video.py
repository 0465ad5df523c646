"""Video cases: deterministic clips, the user's clip re-encoded, and the bench that measures them.

A case is a clip sampled by mlx-vlm at ``fps`` frames a second, at most ``max_frames`` (vllm-mlx's
video benchmark: ten configurations on a 10 s clip, 2 frames at 0.5 fps to 64 frames at 8 fps).
Clips are written and read with OpenCV, which mlx-vlm's own ``load_video`` reads them with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from ..config.settings import MediaPlan, Resolution, Settings
from ..harness.bench import MlxBench
from ..measure.runner import CaseError
from ..results import GenerationRequest, Sample, VideoInput
from .batching import batch_cases

SOURCE_FPS = 30.0  # frame rate of the synthetic clip (Big Buck Bunny's, vllm-mlx's default clip)
MEMORY_WORDS = ("memory", "malloc", "allocate", "oom")


class VideoError(CaseError):
    """A clip that cannot be used: not a video, no frames, or frames mlx-vlm cannot sample."""


def video_id(frames: int, fps: float) -> str:
    """``16f@2fps``: a configuration's test id and table label."""
    return f"{frames}f@{fps:g}fps"


def clip_info(path: Path) -> dict[str, Any]:
    """Frames, frame rate and size of a clip; VideoError naming the file if it has none."""
    import cv2

    if not path.is_file():
        raise VideoError(f"cannot open video {str(path)!r}: no such file")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoError(f"cannot open video {str(path)!r}: not a video OpenCV can read, or a clip "
                             "with no frames")
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        ok, _ = capture.read()
        info = {"frames": frames, "fps": fps, "width": int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                "height": int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))}
    finally:
        capture.release()
    if frames <= 0 or not ok:
        raise VideoError(f"cannot use video {str(path)!r}: it has no frames")
    if fps <= 0:
        raise VideoError(f"cannot use video {str(path)!r}: its frame rate is {fps:g} fps")
    return info


def _writer(path: Path, size: Resolution, fps: float) -> Any:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size.width, size.height))
    if not writer.isOpened():
        raise VideoError(f"cannot write video {str(path)!r}: OpenCV has no mp4v encoder here")
    return writer


def write_synthetic_clip(path: Path, size: Resolution, seconds: float, seed: int = 0) -> Path:
    """A reproducible clip: a drifting gradient, moving shapes, the frame number (no downloads)."""
    import cv2
    import numpy as np

    w, h = size.width, size.height
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    shapes = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-w, w) / 8, rng.uniform(-h, h) / 8,
               max(4, int(rng.uniform(0.04, 0.15) * min(w, h))), tuple(int(c) for c in rng.integers(0, 256, 3)))
              for _ in range(6)]
    writer = _writer(path, size, SOURCE_FPS)
    try:
        for i in range(max(1, round(seconds * SOURCE_FPS))):
            t = i / SOURCE_FPS
            frame = np.stack([127 + 127 * np.sin((x + 40 * t) / 53.0), 255 * y / max(h - 1, 1),
                              127 + 127 * np.cos((x + y - 30 * t) / 41.0)], axis=-1).astype(np.uint8)
            for x0, y0, vx, vy, r, colour in shapes:
                centre = (int((x0 + vx * t) % w), int((y0 + vy * t) % h))
                cv2.circle(frame, centre, r, colour, -1)
            cv2.putText(frame, f"{i}", (max(2, w // 20), max(12, h // 8)), cv2.FONT_HERSHEY_SIMPLEX,
                        max(0.3, h / 360), (255, 255, 255), 1 + h // 240)
            writer.write(frame)
    finally:
        writer.release()
    return path


def reencode_clip(source: Path, path: Path, size: Resolution) -> Path:
    """The user's clip with every frame resized to ``size``, at its own frame rate and length."""
    import cv2

    info = clip_info(source)
    capture = cv2.VideoCapture(str(source))
    writer = _writer(path, size, info["fps"])
    written = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            writer.write(cv2.resize(frame, (size.width, size.height), interpolation=cv2.INTER_AREA))
            written += 1
    finally:
        capture.release()
        writer.release()
    if not written:
        path.unlink(missing_ok=True)
        raise VideoError(f"cannot use video {str(source)!r}: it has no frames")
    return path


class ClipFactory:
    """Clips on disk, each written once: ``clips(frames, fps, seed=0)`` -> a ``VideoInput``."""

    def __init__(self, directory: Path, plan: MediaPlan) -> None:
        self.directory = directory
        self.plan = plan

    def path(self, seed: int = 0) -> Path:
        """The clip file: the synthetic clip of ``seed``, or the user's re-encoded (written once)."""
        size = self.plan.video_size
        source = self.plan.video
        name = f"{source.stem}-{size.id}.mp4" if source else f"synthetic-{size.id}-{self.plan.video_seconds:g}s-{seed}.mp4"
        path = self.directory / name
        if not path.exists():
            tmp = path.with_name(f"{path.stem}.tmp.mp4")  # whole clips only: written, then renamed
            if source is None:
                write_synthetic_clip(tmp, size, self.plan.video_seconds, seed)
            else:
                reencode_clip(source, tmp, size)
            tmp.replace(path)
        return path

    def __call__(self, frames: int, fps: float, seed: int = 0, path: Path | None = None) -> VideoInput:
        if not fps > 0:
            raise VideoError(f"fps must be above 0, got {fps:g}")
        if frames < 1:
            raise VideoError(f"a clip needs at least one frame, got {frames}")
        clip = path if path is not None else self.path(seed)
        clip_info(clip)
        return VideoInput(path=str(clip), fps=float(fps), max_frames=int(frames))


def parametrize_media(metafunc: pytest.Metafunc, settings: Settings) -> None:
    """The video suite's cases over ``--mlx-video-configs``, the batch suite's over ``--mlx-batch-sizes``."""
    if "mlx_video" in metafunc.fixturenames:
        configs = list(settings.media.video_configs)
        metafunc.parametrize("mlx_video", configs, ids=[video_id(f, fps) for f, fps in configs], indirect=True)
    if "mlx_batch_case" in metafunc.fixturenames:
        cases = batch_cases(settings.media.batch_sizes)
        metafunc.parametrize("mlx_batch_case", cases, ids=[c.id for c in cases])


def clip_or_fail(clips: ClipFactory, config: tuple[int, float]) -> VideoInput:
    """The clip of a (frames, fps) case; a clip that cannot be used fails the test in one line."""
    try:
        return clips(*config)
    except VideoError as exc:
        error = str(exc)
    pytest.fail(error, pytrace=False)


def in_process_only(model: Any, suite: str) -> None:
    """Skip under the A/B mode or --mlx-isolate: the video and batch suites measure in this process."""
    if model.ab is not None or model.isolated is not None:
        pytest.skip(f"the {suite} suite measures in this process; it does not run with --mlx-ab-* or --mlx-isolate")


def as_case_error(exc: BaseException, clip: VideoInput) -> CaseError | None:
    """An exception of a video generation as a one-line reason, or None to let it through."""
    text = str(exc)
    if isinstance(exc, MemoryError) or any(w in text.lower() for w in MEMORY_WORDS):
        return CaseError(f"out of memory at {clip.max_frames} frames: {type(exc).__name__}: {text}")
    if isinstance(exc, ValueError) and ("video" in text.lower() or "frame" in text.lower()):
        return VideoError(f"mlx-vlm could not sample {clip.path!r} at {clip.fps:g} fps, "
                          f"{clip.max_frames} frames: {text}")
    return None


class VideoBench(MlxBench):
    """``mlx_video_bench``: ``run()`` measures generations on this test's clip, like images."""

    side = "video"

    def __init__(self, request: Any, model: Any, clip: VideoInput, settings: Settings,
                 frames_info: Callable[[Path], dict[str, Any]] = clip_info) -> None:
        in_process_only(model, "video")
        super().__init__(request, model, settings.media.video_size, None, settings)  # type: ignore[arg-type]
        self.clip = clip
        self.time_limit_s = settings.ab.timeout_s
        info = frames_info(Path(clip.path))
        self.extra_workload = {"video": {"fps": clip.fps, "max_frames": clip.max_frames,
                                         "frame_size": f"{info['width']}x{info['height']}",
                                         "clip": str(settings.media.video or "synthetic"),
                                         "clip_frames": info["frames"], "clip_fps": info["fps"]}}

    def make_request(self, **fields: Any) -> GenerationRequest:
        return GenerationRequest(**fields, video=self.clip)

    def label(self, request: GenerationRequest) -> str:
        return self.clip.id

    def record_work(self, request: GenerationRequest) -> tuple[Sample, dict[str, Any] | None, str]:
        """The profiled generation on the clip: its errors fail the case as a measured one's do."""
        try:
            return super().record_work(request)
        except (MemoryError, RuntimeError, ValueError) as exc:
            error = as_case_error(exc, self.clip)
            if error is None:
                raise
            raise error from None

    def measure_request(self, request: GenerationRequest) -> Sample:
        """One generation on the clip; out of memory, a bad clip or the time limit fail the case."""
        try:
            sample = super().measure_request(request)
        except (MemoryError, RuntimeError, ValueError) as exc:
            error = as_case_error(exc, self.clip)
            if error is None:
                raise
            raise error from None
        if sample.time_s > self.time_limit_s:
            raise CaseError(f"one generation took {sample.time_s:.0f} s, beyond the "
                            f"{self.time_limit_s:g} s limit (--mlx-worker-timeout)")
        return sample
