"""The measured generation on MLX: fixed output length, warmup, repeated rounds (no pytest here)."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, Callable, Iterator

from ..common.machine import available_memory_bytes
from ..common.stats import relative_half_width
from ..results import GenerationRequest, Sample, image_list


class GenerationLengthError(RuntimeError):
    """The engine stopped before the fixed output length."""


class TooLargeError(RuntimeError):
    """An input the vision encoder cannot take on this machine; refused before it runs."""


class CaseError(RuntimeError):
    """A case that cannot be measured here, with the reason: a bad clip or batch, memory, time."""


INDEX_LIMIT = 2**31  # MLX kernels index arrays with 32-bit integers


_ITEMSIZE: dict[int, int] = {}


def _vision_itemsize(model: Any) -> int:
    """Bytes per element of the vision tower's weights (its activations' dtype), once per model."""
    key = id(model)
    if key not in _ITEMSIZE:
        try:
            from mlx.utils import tree_flatten

            params = tree_flatten(model.vision_tower.parameters())
            _ITEMSIZE[key] = max(p.dtype.size for _, p in params) if params else 2
        except Exception:  # noqa: BLE001 - no vision tower to look at: assume 16-bit
            _ITEMSIZE[key] = 2
    return _ITEMSIZE[key]


@cache
def _available_memory() -> int | None:
    return available_memory_bytes()


def check_vision_size(model: Any, inputs: dict[str, Any], available: int | None) -> None:
    """Refuse an image whose vision attention cannot run here, before the encoder starts.

    Qwen-style processors report the patches of each image (``image_grid_thw``); the vision
    encoder's full-attention layers hold heads x patches² scores. Beyond 2^31 of them MLX
    crashes the interpreter (a floating point exception at 4096² and 8192² on Qwen3-VL);
    beyond the machine's memory it cannot finish. Models without a patch grid pass unchecked.
    """
    grid = inputs.get("image_grid_thw")
    vision = getattr(getattr(model, "config", None), "vision_config", None)
    heads = getattr(vision, "num_heads", None)
    frames = inputs.get("video_grid_thw")  # a clip's frames attend within themselves
    if (grid is None and frames is None) or not heads:
        return
    patches = max([int(t) * int(h) * int(w) for t, h, w in (grid.tolist() if grid is not None else [])]
                  + [int(h) * int(w) for _, h, w in (frames.tolist() if frames is not None else [])])
    scores = int(heads) * patches**2
    itemsize = _vision_itemsize(model)
    if scores >= INDEX_LIMIT:
        raise TooLargeError(
            f"{patches} vision patches: the vision encoder's attention would hold {scores:.3g} "
            f"scores ({heads} heads x {patches}²), beyond the 2^31 elements MLX can index (it "
            "crashes the interpreter); use a smaller resolution"
        )
    need = 2 * scores * itemsize  # scores and their softmax
    if available and need > available:
        raise TooLargeError(
            f"{patches} vision patches: the vision encoder's attention needs about "
            f"{need / 1e9:.1f} GB, more than the {available / 1e9:.1f} GB this machine has; "
            "use a smaller resolution"
        )


@contextmanager
def fixed_output_length(processor: Any) -> Iterator[None]:
    """Disable EOS on the processor's stopping criteria; restore every stopping state after."""
    tokenizer = getattr(processor, "tokenizer", processor)
    criteria = getattr(tokenizer, "stopping_criteria", None)
    saved_ids = list(criteria.eos_token_ids) if criteria is not None else None
    missing = object()
    saved_thinking = getattr(tokenizer, "thinking_budget_criteria", missing)
    if criteria is not None:
        criteria.eos_token_ids = []
    try:
        yield
    finally:
        if criteria is not None:
            criteria.eos_token_ids = saved_ids
        if saved_thinking is missing:
            if hasattr(tokenizer, "thinking_budget_criteria"):
                delattr(tokenizer, "thinking_budget_criteria")
        else:
            tokenizer.thinking_budget_criteria = saved_thinking


def format_prompt(model: Any, processor: Any, prompt: str, num_images: int, video: Any = None) -> str:
    """The model's chat template applied to a user prompt with ``num_images`` images (and a clip)."""
    from mlx_vlm.prompt_utils import apply_chat_template

    if video is not None:
        return apply_chat_template(processor, model.config, prompt, num_images=num_images,
                                   video=video.path, fps=video.fps)
    return apply_chat_template(processor, model.config, prompt, num_images=num_images)


def measure_generation(model: Any, processor: Any, request: GenerationRequest, *,
                       on_first_token: Callable[[], float | None] | None = None,
                       on_token: Callable[[int], None] | None = None) -> Sample:
    """Run one greedy generation of exactly ``max_tokens`` tokens and time its phases.

    ``on_first_token`` is called as soon as the first token is out; the seconds it returns
    (a barrier A/B pair waiting for its other side) are left out of the decode and total times.
    ``on_token`` is called with the 0-based number of each token as it comes out.
    """
    import mlx.core as mx
    import numpy as np
    from mlx_vlm import stream_generate
    from mlx_vlm.utils import prepare_inputs, should_add_special_tokens

    images = [_image_arg(i) for i in request.images] or None
    video = request.video
    # Qwen2.5-VL and Gemma 4 configs name it image_token_id only
    image_token = getattr(model.config, "image_token_index", None) or getattr(model.config, "image_token_id", None)
    counted_token = image_token  # a clip's placeholder tokens count as its image tokens
    if video is not None:
        counted_token = getattr(model.config, "video_token_index", None) or getattr(model.config, "video_token_id", None)
    mx.synchronize()
    mx.reset_peak_memory()
    with fixed_output_length(processor):
        start = time.perf_counter()  # Preprocess: the chat template, then the image and tokens
        formatted = format_prompt(model, processor, request.prompt, 0 if images is None else len(images), video)
        inputs = prepare_inputs(
            processor,
            images=images,
            prompts=formatted,
            image_token_index=image_token,
            add_special_tokens=should_add_special_tokens(model.config.model_type, processor),
            **({} if video is None else {"videos": [video.path], "fps": video.fps,
                                         "max_frames": video.max_frames}),
        )
        input_ids = inputs["input_ids"]
        if images is not None or video is not None:
            check_vision_size(model, inputs, _available_memory())
        extra = {
            k: v
            for k, v in inputs.items()
            if k not in ("input_ids", "pixel_values", "attention_mask")
        }
        mx.eval(input_ids, *(v for v in extra.values() if isinstance(v, mx.array)))
        preprocess_s = time.perf_counter() - start
        first = last_token_at = None
        held = 0.0  # seconds on_first_token kept the generation waiting
        first_logprobs = None
        result = None
        generated = 0
        streamed: list[int] = []  # mlx-vlm before 0.7.1 has no GenerationResult.token_ids
        for result in stream_generate(
            model,
            processor,
            formatted,
            input_ids=input_ids,
            pixel_values=inputs.get("pixel_values"),
            mask=inputs.get("attention_mask"),
            max_tokens=request.max_tokens,
            temperature=0.0,
            **extra,
            **request.generate_kwargs,
        ):
            now = time.perf_counter()
            if first is None:
                first = now
                if on_first_token is not None:
                    held = float(on_first_token() or 0.0)
                if request.capture_logprobs and result.logprobs is not None:
                    first_logprobs = np.array(result.logprobs.astype(mx.float32)).reshape(-1)
            if result.generation_tokens > generated:
                generated = result.generation_tokens
                last_token_at = now
                if on_token is not None:
                    on_token(generated - 1)
                if result.token is not None and not hasattr(result, "token_ids"):
                    streamed.append(int(getattr(result.token, "item", lambda: result.token)()))
        end = time.perf_counter()
    if result is None or first is None or last_token_at is None:
        raise GenerationLengthError("the engine produced no output")
    if generated != request.max_tokens:
        raise GenerationLengthError(
            f"generation stopped after {generated} of {request.max_tokens} tokens "
            f"(finish reason {result.finish_reason!r}); the fixed output length did not hold"
        )
    computed = result.prompt_tokens - result.cached_tokens
    prefill_s = result.prompt_tokens / result.prompt_tps if result.prompt_tps else first - start
    image_tokens = (
        int((input_ids == counted_token).sum().item()) if (images or video) and counted_token is not None else 0
    )
    time_s = end - start - held
    return Sample(
        time_s=time_s,
        ttft_s=first - start,
        preprocess_s=preprocess_s,
        prefill_s=prefill_s,
        prompt_tokens=int(result.prompt_tokens),
        cached_tokens=int(result.cached_tokens),
        image_tokens=image_tokens,
        generation_tokens=generated,
        prompt_tps=computed / prefill_s if prefill_s > 0 else 0.0,
        generation_tps=(generated - 1) / (last_token_at - first - held) if generated > 1 else 0.0,
        end_to_end_tps=generated / time_s,
        peak_memory=mx.get_peak_memory() / 1e9,
        token_ids=list(getattr(result, "token_ids", None) or streamed),
        input_ids=input_ids.reshape(-1).tolist(),
        first_logprobs=first_logprobs,
    )


def record_work(model: Any, processor: Any, request: GenerationRequest, *, spec: str = "") -> tuple[Sample, dict[str, Any]]:
    """One untimed generation under the work recorder: its sample (for the token counts) and its
    work profile as data, with the generated token ids (``token_ids``) beside it.

    Raises ``WorkProfileUnavailable`` where this mlx cannot be read (the caller reports it)."""
    from .recorder import WorkRecorder, profile_key

    recorder = WorkRecorder()
    with recorder:
        sample = measure_generation(model, processor, request, on_token=recorder.mark_token)
    size = "x".join(map(str, _image_size(request.image))) if request.image is not None else "none"
    key = profile_key(model=spec or None, prompt_tokens=sample.prompt_tokens, image_tokens=sample.image_tokens,
                      image_size=size, tokens=sample.generation_tokens)
    profile = recorder.profile(prompt_tokens=sample.prompt_tokens, key=key)
    return sample, {**profile.to_dict(), "token_ids": list(sample.token_ids)}


def _image_size(image: Any) -> tuple[int, int]:
    """(width, height) of the request's image (the first of several); (0, 0) when unknown."""
    image = next(iter(image_list(image)), None)
    if image is None:
        return 0, 0
    size = getattr(image, "size", None)
    if isinstance(size, tuple):
        return int(size[0]), int(size[1])
    try:
        from PIL import Image

        with Image.open(image) as img:
            return img.size
    except Exception:  # noqa: BLE001 - the size only labels the key
        return 0, 0


def _image_arg(image: Any) -> Any:
    return str(image) if isinstance(image, Path) else image


PRECISION_METRICS = ("end_to_end_tps", "generation_tps", "ttft_s")


def warm_up(measure: Callable[[], Sample], warmup: int, profile: Callable[[], Sample] | None = None) -> list[Sample]:
    """``warmup`` unrecorded runs; with ``profile``, the work profile is recorded in the last of
    them (its timing is thrown away anyway), or in one more run when there is no warmup."""
    warm = [measure() for _ in range(warmup - 1 if profile is not None and warmup else warmup)]
    if profile is not None:
        sample = profile()
        if warmup:
            warm.append(sample)
    return warm


def run_adaptive(
    measure: Callable[[], Sample], *, warmup: int, min_rounds: int, max_rounds: int,
    budget_s: float, target: float, profile: Callable[[], Sample] | None = None,
) -> tuple[list[Sample], list[Sample], dict[str, Any]]:
    """Measure until the 95% interval of the median of Speed, Decode and TTFT is within
    ``target`` (relative half-width) of it, or ``max_rounds``, or the time budget.
    Returns (samples, warmup samples, what was reached and why it stopped)."""
    start = time.perf_counter()
    warm = warm_up(measure, warmup, profile)
    samples: list[Sample] = []
    stopped = "max rounds"
    reached: dict[str, float] = {}
    while len(samples) < max_rounds:
        samples.append(measure())
        if len(samples) < min_rounds:
            continue
        reached = {m: relative_half_width(values) for m in PRECISION_METRICS
                   if any(values := [float(getattr(s, m)) for s in samples])}  # all 0 (Decode of 1 token): none to reach
        if all(v <= target for v in reached.values()):
            stopped = "precision reached"
            break
        if time.perf_counter() - start > budget_s:
            stopped = "time budget"
            break
    widths = {m: v if math.isfinite(v) else None for m, v in reached.items()}  # None: no interval (JSON has no inf)
    return samples, warm, {"target": target, "half_width": widths, "stopped": stopped,
                           "seconds": time.perf_counter() - start}


def run_case(
    measure: Callable[[], Sample], *, rounds: int, warmup: int, profile: Callable[[], Sample] | None = None,
) -> tuple[list[Sample], list[Sample]]:
    """``warmup`` unrecorded runs (the first call at a new shape compiles kernels; with
    ``profile``, the last records the work profile), then ``rounds`` measured ones.
    Returns (samples, warmup samples)."""
    warm = warm_up(measure, warmup, profile)
    return [measure() for _ in range(rounds)], warm
