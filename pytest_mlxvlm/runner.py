"""The measured generation: fixed output length, warmup, repeated rounds (no pytest here)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

from .stats import Summary, summarize


@dataclass(frozen=True)
class Metric:
    """A measured quantity and which way is better."""

    name: str
    label: str
    unit: str
    better: str  # "higher", "lower" or "exact" (token counts: any change is a new workload)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("end_to_end_tps", "Speed", "tok/s", "higher"),
        Metric("generation_tps", "Decode", "tok/s", "higher"),
        Metric("prompt_tps", "Prefill", "tok/s", "higher"),
        Metric("time_s", "Time", "s", "lower"),
        Metric("ttft_s", "TTFT", "s", "lower"),
        Metric("preprocess_s", "Preprocess", "s", "lower"),
        Metric("prefill_s", "Prefill time", "s", "lower"),
        Metric("peak_memory", "Peak memory", "GB", "lower"),
        Metric("prompt_tokens", "Prompt tokens", "tokens", "exact"),
        Metric("image_tokens", "Image tokens", "tokens", "exact"),
        Metric("generation_tokens", "Tokens", "tokens", "exact"),
    )
}


@dataclass(frozen=True)
class GenerationRequest:
    """One generation to measure."""

    image: Any  # a path, a PIL image, or None for text only
    prompt: str
    max_tokens: int
    generate_kwargs: dict[str, Any] = field(default_factory=dict)
    capture_logprobs: bool = False  # keep the first token's log-probabilities (cache checks)


def from_fields(cls: Any, data: dict[str, Any]) -> Any:
    """A dataclass from a dict that may hold more keys than its fields (a ``to_dict`` output)."""
    return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class Sample:
    """Everything measured in one generation."""

    time_s: float  # wall time: preprocessing, vision encoder, prefill and decode
    ttft_s: float  # from the call to the first generated token
    preprocess_s: float  # image load and processor (resize, patchify, tokenize)
    prefill_s: float  # vision encoder and prompt prefill, as timed by mlx-vlm
    prompt_tokens: int  # all prompt tokens, cached ones included
    cached_tokens: int  # prompt tokens answered from a prefix cache
    image_tokens: int
    generation_tokens: int
    prompt_tps: float  # computed (uncached) prompt tokens / prefill_s
    generation_tps: float  # (tokens - 1) / (time of last token - time of first token)
    end_to_end_tps: float  # generation_tokens / time_s: the "Speed" column
    peak_memory: float  # GB, as mlx-vlm reports it; reset before the run
    token_ids: list[int] = field(default_factory=list, repr=False)
    input_ids: list[int] = field(default_factory=list, repr=False)
    first_logprobs: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items()
                if k not in ("token_ids", "input_ids", "first_logprobs")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sample:
        return from_fields(cls, data)


@dataclass
class CaseResult:
    """The samples of one (model, resolution) case after warmup."""

    model: str
    resolution: str
    samples: list[Sample]
    warmup: list[Sample] = field(default_factory=list)
    workload: dict[str, Any] = field(default_factory=dict)
    load_time_s: float = 0.0
    test_id: str = ""
    outcome: str | None = None  # the test's outcome, once known
    case_key: str = ""  # the test's id without the model: the key of its baseline
    comparison: Any = None  # the gate's CaseComparison, once compared
    bandwidth: dict[str, float] | None = None  # decode's bandwidth limit, when known

    def values(self, metric: str) -> list[float]:
        return [float(getattr(s, metric)) for s in self.samples]

    def summary(self, metric: str) -> Summary:
        return summarize(self.values(metric))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels; (0, 0) for a text-only case."""
        width, _, height = self.resolution.partition("x")
        return (int(width), int(height)) if width.isdigit() and height.isdigit() else (0, 0)

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    @property
    def test_name(self) -> str:
        """The test function's name, without module and parameters."""
        return self.test_id.rpartition("::")[2].partition("[")[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "test_id": self.test_id,
            "outcome": self.outcome,
            "case_key": self.case_key,
            "model": self.model,
            "resolution": self.resolution,
            "width": self.width,
            "height": self.height,
            "workload": self.workload,
            "load_time_s": self.load_time_s,
            "summary": {m: self.summary(m).to_dict() for m in METRICS},
            "samples": [s.to_dict() for s in self.samples],
            "warmup_samples": [s.to_dict() for s in self.warmup],
            "comparison": self.comparison.to_dict() if self.comparison is not None else None,
            "bandwidth": self.bandwidth,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseResult:
        """A result as ``to_dict`` wrote it (a pytest-xdist worker's, a JSON report's)."""
        from .compare import CaseComparison

        comparison = data.get("comparison")
        return cls(
            model=data["model"], resolution=data["resolution"],
            samples=[Sample.from_dict(s) for s in data.get("samples", [])],
            warmup=[Sample.from_dict(s) for s in data.get("warmup_samples", [])],
            workload=dict(data.get("workload", {})), load_time_s=data.get("load_time_s", 0.0),
            test_id=data.get("test_id", ""), outcome=data.get("outcome"),
            case_key=data.get("case_key", ""),
            comparison=CaseComparison.from_dict(comparison) if comparison else None,
            bandwidth=data.get("bandwidth"),
        )


class GenerationLengthError(RuntimeError):
    """The engine stopped before the fixed output length."""


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


def format_prompt(model: Any, processor: Any, prompt: str, num_images: int) -> str:
    """The model's chat template applied to a user prompt with ``num_images`` images."""
    from mlx_vlm.prompt_utils import apply_chat_template

    return apply_chat_template(processor, model.config, prompt, num_images=num_images)


def measure_generation(model: Any, processor: Any, request: GenerationRequest) -> Sample:
    """Run one greedy generation of exactly ``max_tokens`` tokens and time its phases."""
    import mlx.core as mx
    import numpy as np
    from mlx_vlm import stream_generate
    from mlx_vlm.utils import prepare_inputs, should_add_special_tokens

    if request.image is None:
        images = None
    elif isinstance(request.image, (list, tuple)):
        images = [_image_arg(i) for i in request.image]
    else:
        images = [_image_arg(request.image)]
    formatted = format_prompt(model, processor, request.prompt, 0 if images is None else len(images))
    image_token = getattr(model.config, "image_token_index", None)
    mx.synchronize()
    mx.reset_peak_memory()
    with fixed_output_length(processor):
        start = time.perf_counter()
        inputs = prepare_inputs(
            processor,
            images=images,
            prompts=formatted,
            image_token_index=image_token,
            add_special_tokens=should_add_special_tokens(model.config.model_type, processor),
        )
        input_ids = inputs["input_ids"]
        extra = {
            k: v
            for k, v in inputs.items()
            if k not in ("input_ids", "pixel_values", "attention_mask")
        }
        mx.eval(input_ids, *(v for v in extra.values() if isinstance(v, mx.array)))
        preprocess_s = time.perf_counter() - start
        first = last_token_at = None
        first_logprobs = None
        result = None
        generated = 0
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
                if request.capture_logprobs and result.logprobs is not None:
                    first_logprobs = np.array(result.logprobs.astype(mx.float32)).reshape(-1)
            if result.generation_tokens > generated:
                generated = result.generation_tokens
                last_token_at = now
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
        int((input_ids == image_token).sum().item()) if images and image_token is not None else 0
    )
    time_s = end - start
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
        generation_tps=(generated - 1) / (last_token_at - first) if generated > 1 else 0.0,
        end_to_end_tps=generated / time_s,
        peak_memory=mx.get_peak_memory() / 1e9,
        token_ids=list(result.token_ids or []),
        input_ids=input_ids.reshape(-1).tolist(),
        first_logprobs=first_logprobs,
    )


def _image_arg(image: Any) -> Any:
    return str(image) if isinstance(image, Path) else image


def run_case(
    measure: Callable[[], Sample], *, rounds: int, warmup: int
) -> tuple[list[Sample], list[Sample]]:
    """``warmup`` unrecorded runs (the first call at a new shape compiles kernels), then
    ``rounds`` measured ones. Returns (samples, warmup samples)."""
    warm = [measure() for _ in range(warmup)]
    return [measure() for _ in range(rounds)], warm
