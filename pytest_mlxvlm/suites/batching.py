"""Batched throughput: ``mlx_vlm.batch_generate`` over images of one size or of mixed sizes.

A round is one ``batch_generate`` call of N requests of a fixed length (end-of-sequence disabled),
with ``group_by_shape`` on or off, recorded as one ``Sample``: Time is the call's wall time, which
is also each request's latency (the call returns every answer at once), Speed the aggregate tok/s
(all requests' tokens / Time), Prefill and Decode mlx-vlm's ``BatchStats``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from ..config.settings import Resolution, Settings
from ..harness.bench import MlxBench
from ..measure.runner import CaseError, GenerationLengthError, fixed_output_length
from ..results import GenerationRequest, Sample

SIMILAR = Resolution(448, 448)  # every image of a similar-sized batch
# A mixed batch cycles through these: about the pixels (and image tokens) of SIMILAR on average
MIXED = (Resolution(224, 224), Resolution(576, 576), Resolution(448, 448), Resolution(448, 448))


class BatchError(CaseError):
    """A batch that cannot be run: an image that cannot be read, names it."""


@dataclass(frozen=True)
class BatchCase:
    """One batch configuration: requests per call, image sizes, shape grouping."""

    size: int
    mixed: bool
    grouped: bool

    @property
    def id(self) -> str:
        """``b4-mixed-grouped``: the test id and table label."""
        return f"b{self.size}-{'mixed' if self.mixed else 'similar'}-{'grouped' if self.grouped else 'ungrouped'}"

    def resolutions(self) -> list[Resolution]:
        """The image size of each request."""
        return [MIXED[i % len(MIXED)] if self.mixed else SIMILAR for i in range(self.size)]


def batch_cases(sizes: tuple[int, ...]) -> list[BatchCase]:
    """Per batch size: similar sizes (one shape: grouping changes nothing), mixed sizes grouped
    and ungrouped; a batch of one is only the similar case."""
    cases = []
    for size in sizes:
        cases.append(BatchCase(size, mixed=False, grouped=True))
        if size > 1:
            cases += [BatchCase(size, mixed=True, grouped=True), BatchCase(size, mixed=True, grouped=False)]
    return cases


def check_images(paths: list[Path]) -> None:
    """Every image of a batch opens; BatchError naming the first that does not (and its place)."""
    from ..measure.images import ImageError, open_image

    for index, path in enumerate(paths):
        try:
            open_image(Path(path))
        except ImageError as exc:
            raise BatchError(f"request {index + 1} of {len(paths)}: {exc}") from None


def measure_batch(model: Any, processor: Any, images: list[str], prompt: str, max_tokens: int,
                  group_by_shape: bool) -> Sample:
    """One ``batch_generate`` call of ``len(images)`` requests of exactly ``max_tokens`` tokens."""
    import mlx.core as mx
    from mlx_vlm import batch_generate

    mx.synchronize()
    mx.reset_peak_memory()
    with fixed_output_length(processor):
        start = time.perf_counter()
        response = batch_generate(model, processor, images=list(images), prompts=[prompt] * len(images),
                                  max_tokens=max_tokens, group_by_shape=group_by_shape)  # greedy: argmax
        end = time.perf_counter()
    stats = response.stats
    expected = max_tokens * len(images)
    if stats.generation_tokens != expected:
        raise GenerationLengthError(f"the batch generated {stats.generation_tokens} of {expected} tokens "
                                    f"({len(images)} x {max_tokens}); the fixed output length did not hold")
    time_s = end - start
    return Sample(
        time_s=time_s,
        ttft_s=float(stats.prompt_time),  # the batch's prefill: no request has a token before it ends
        preprocess_s=max(0.0, time_s - stats.prompt_time - stats.generation_time),
        prefill_s=float(stats.prompt_time),
        prompt_tokens=int(stats.prompt_tokens),
        cached_tokens=0,
        image_tokens=0,
        generation_tokens=int(stats.generation_tokens),
        prompt_tps=float(stats.prompt_tps),
        generation_tps=float(stats.generation_tps),
        end_to_end_tps=stats.generation_tokens / time_s,
        peak_memory=mx.get_peak_memory() / 1e9,
    )


def record_batch_work(model: Any, processor: Any, images: list[str], prompt: str, max_tokens: int,
                      group_by_shape: bool, *, spec: str = "") -> tuple[Sample, dict[str, Any]]:
    """One ``measure_batch`` call under the work recorder: its sample and the work profile of the
    whole call as one phase, ``batch`` (requests' tokens interleave: no decode steps of one)."""
    from PIL import Image

    from ..measure.recorder import WorkRecorder, profile_key

    recorder = WorkRecorder(first_phase="batch")
    with recorder:
        sample = measure_batch(model, processor, images, prompt, max_tokens, group_by_shape)
    sizes = []
    for path in images:
        with Image.open(path) as img:
            sizes.append("x".join(map(str, img.size)))
    key = profile_key(model=spec or None, prompt_tokens=sample.prompt_tokens, image_size=",".join(sizes),
                      tokens=sample.generation_tokens, extra={"batch": len(images), "group_by_shape": group_by_shape})
    return sample, recorder.profile(prompt_tokens=sample.prompt_tokens, key=key).to_dict()


class BatchBench(MlxBench):
    """``mlx_batch_bench``: ``run()`` measures ``batch_generate`` calls of this test's batch."""

    side = "batch"

    def __init__(self, request: Any, model: Any, case: BatchCase, make_image: Callable[..., Path],
                 settings: Settings, measure: Callable[..., Sample] | None = None) -> None:
        """``make_image(width, seed=, height=)`` writes each request's image (``mlx_cache_image``)."""
        if model.ab is not None or model.isolated is not None:
            pytest.skip("the batch suite measures in this process; it does not run with --mlx-ab-* or --mlx-isolate")
        images = [make_image(r.width, seed=i, height=r.height) for i, r in enumerate(case.resolutions())]
        super().__init__(request, model, case.resolutions()[0], images[0], settings)
        self.case = case
        self.images = [str(p) for p in images]
        self._measure_batch = measure or measure_batch
        self.extra_workload = {"batch": {"size": case.size, "mixed": case.mixed, "group_by_shape": case.grouped,
                                         "resolutions": [r.id for r in case.resolutions()]}}

    def label(self, request: GenerationRequest) -> str:
        return self.case.id

    def _images(self, request: GenerationRequest) -> list[str]:
        """The batch's images (``run(image=[...])``: those), each checked: an image that cannot be
        read fails the case, naming it."""
        chosen = request.image if isinstance(request.image, (list, tuple)) else None
        images = [str(p) for p in chosen] if chosen else self.images
        check_images([Path(p) for p in images])
        return images

    def measure_request(self, request: GenerationRequest) -> Sample:
        """One ``batch_generate`` call of the whole batch."""
        return self._measure_batch(self.model.model, self.model.processor, self._images(request),
                                   request.prompt, request.max_tokens, self.case.grouped)

    def record_work(self, request: GenerationRequest) -> tuple[Sample, dict[str, Any] | None, str]:
        """The work profile of one whole ``batch_generate`` call (phase ``batch``)."""
        from ..measure.work import WorkProfileUnavailable

        images = self._images(request)
        try:
            return (*record_batch_work(self.model.model, self.model.processor, images, request.prompt,
                                       request.max_tokens, self.case.grouped, spec=self.model.spec), "")
        except WorkProfileUnavailable as exc:
            return self.measure_request(request), None, str(exc)
