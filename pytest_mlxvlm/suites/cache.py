"""Prefix-cache expectations checked through real generations (no pytest here).

An engine wraps a real prefix cache behind one small protocol: the keyword arguments it
adds to ``mlx_vlm.stream_generate``. A step runs one real generation through the engine
and one cold generation of the same input, and classifies the outcome from the engine's
own evidence (the cached tokens the generation reports): HIT, PARTIAL (n tokens) or MISS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..measure.runner import measure_generation
from ..results import OUTCOMES, GenerationRequest, Sample, StepResult, VideoInput

# Max |difference| of first-token log-probabilities vs a cold run of the same input. GPU
# kernels are not bit-reproducible (two cold bf16 runs can part ways after a few tokens at
# a near-tie), so correctness is judged on the first token's whole distribution, which
# another image's state moves by far more than this.
LOGPROB_TOLERANCE = 0.1


class CacheEngineError(ValueError):
    """An engine that cannot be used here; the message names it and says why."""


class CacheEngine(Protocol):
    """What the cache fixture needs of an engine."""

    name: str
    description: str
    slack: int  # prompt tokens a HIT may leave uncomputed (the engine's block granularity)

    def reset(self) -> None:
        """Forget everything cached."""

    def generate_kwargs(self, request: GenerationRequest, input_ids: list[int]) -> dict[str, Any]:
        """Keyword arguments for ``mlx_vlm.stream_generate`` that route through the cache."""

    def finish(self) -> None:
        """After the generation of the last ``generate_kwargs``: store what the engine keeps.

        Optional: engines without it are used as they are."""


@dataclass
class APCEngine:
    """mlx-vlm's automatic prefix cache: hashed blocks, image content in the hash."""

    name: str = "apc"
    description: str = "mlx_vlm.apc.APCManager (automatic prefix cache)"
    block_size: int = 16
    num_blocks: int = 4096
    manager: Any = None

    @property
    def slack(self) -> int:
        return self.block_size

    def reset(self) -> None:
        from mlx_vlm.apc import APCManager

        self.manager = APCManager(num_blocks=self.num_blocks, block_size=self.block_size)

    def generate_kwargs(self, request: GenerationRequest, input_ids: list[int]) -> dict[str, Any]:
        if self.manager is None:
            self.reset()
        return {"apc_manager": self.manager}  # mlx-vlm harvests the blocks itself


@dataclass
class PromptCacheStateEngine:
    """mlx-vlm's per-conversation cache: the KV state of the last request, matched by token ids."""

    name: str = "prompt-cache"
    description: str = "mlx_vlm PromptCacheState (per-conversation KV reuse)"
    slack: int = 1
    state: Any = None

    def reset(self) -> None:
        from mlx_vlm.generate import PromptCacheState

        self.state = PromptCacheState()

    def generate_kwargs(self, request: GenerationRequest, input_ids: list[int]) -> dict[str, Any]:
        if self.state is None:
            self.reset()
        return {"prompt_cache_state": self.state}  # mlx-vlm updates the state itself


VLLM_MLX_INSTALL = "pip install --no-deps vllm-mlx (its prefix cache needs no other package)"


def image_paths(image: Any) -> list[str]:
    """The image files of a request, as vllm-mlx keys them (it hashes file content)."""
    from pathlib import Path

    images = image if isinstance(image, (list, tuple)) else [image]
    if not all(isinstance(i, (str, Path)) for i in images):
        raise CacheEngineError("cache engine 'vllm-mlx' keys on image files: pass image paths")
    return [str(i) for i in images]


def _detached(value: Any) -> Any:
    """New array objects for a cache state, so a clone's in-place updates never reach the original."""
    import mlx.core as mx

    if isinstance(value, mx.array):
        return mx.array(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(v) for v in value)
    return value


def snapshot_kv(kv_cache: list[Any], tokens: int) -> list[Any]:
    """A detached copy of each layer's cache holding the first ``tokens`` positions.

    Generic over mlx-vlm's cache classes: each layer's ``state`` is copied and cut back with its
    own ``trim``. A layer that cannot be cut back (a recurrent or convolution state, as LFM2's
    conv layers keep; a sliding window that has wrapped) raises CacheEngineError naming it."""
    import copy

    import mlx.core as mx

    offsets = [getattr(layer, "offset", None) for layer in kv_cache]
    known = [int(o) for o in offsets if o is not None]
    drop = max(known) - tokens if known else None
    for index, layer in enumerate(kv_cache):
        cut = drop is not None and (drop == 0 or (drop > 0 and layer.is_trimmable()
                                                  and not getattr(layer, "start_position", 0)))
        if not cut:
            raise CacheEngineError(
                f"unsupported cache type {type(layer).__name__} (layer {index}): its "
                f"state cannot be cut back to the first {tokens} tokens (a recurrent or "
                "convolution state, or a sliding window that has wrapped), so the stored state "
                "cannot be reused for this model")
    out = []
    for layer in kv_cache:
        clone = copy.copy(layer)
        clone.state = _detached(layer.state)
        if drop:
            clone.trim(drop)
        out.append(clone)
    mx.eval([c.state for c in out])
    return out


@dataclass
class VllmMlxEngine:
    """vllm-mlx's MLLMPrefixCacheManager: key = hash(image files' content) + hash(prompt).

    The manager decides (``fetch``: entry and prefix match length); the KV state it stores is
    reused in the generation through mlx-vlm's prefix reuse, all but the last prompt token,
    which is recomputed for the first token's logits. As in vllm-mlx, only misses are stored.
    vllm-mlx 0.6.0's own server passes text-only token ids and, with images, leaves reuse to
    mlx-vlm; here the full input ids are stored, so the match length covers the KV state.
    """

    name: str = "vllm-mlx"
    description: str = "vllm_mlx.mllm_cache.MLLMPrefixCacheManager (image content + prompt hash)"
    slack: int = 1
    max_entries: int = 50
    manager: Any = None
    pending: Any = None

    def reset(self) -> None:
        try:
            from vllm_mlx.mllm_cache import MLLMPrefixCacheManager
        except ImportError as exc:
            raise CacheEngineError(f"cache engine 'vllm-mlx' needs the vllm_mlx package: "
                                   f"{VLLM_MLX_INSTALL}") from exc
        self.manager = MLLMPrefixCacheManager(max_entries=self.max_entries)
        self.pending = None

    def generate_kwargs(self, request: GenerationRequest, input_ids: list[int]) -> dict[str, Any]:
        from mlx_vlm.generate import PromptCacheState

        if self.manager is None:
            self.reset()
        clip = request.video  # keyed as vllm-mlx keys clips: path (content here) + fps + max frames + prompt
        images = image_paths(clip.path if clip else request.image)
        key = f"{request.prompt}\x00video fps={clip.fps:g} max_frames={clip.max_frames}" if clip else request.prompt
        entry, matched = self.manager.fetch(images, key, list(input_ids))
        state = PromptCacheState()
        reuse = min(matched, len(input_ids) - 1)
        if entry is not None and entry.kv_cache and reuse > 0:
            state.update(list(entry.token_ids[:reuse]), snapshot_kv(entry.kv_cache, reuse))
        self.pending = (images, key, list(input_ids), entry is None, state)
        return {"prompt_cache_state": state}

    def finish(self) -> None:
        if self.pending is None:
            return
        images, prompt, input_ids, missed, state = self.pending
        self.pending = None
        if missed and state.cache is not None:
            self.manager.store(images, prompt, None, snapshot_kv(state.cache, len(input_ids)),
                               input_ids)


def vllm_mlx_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm_mlx") is not None


def builtin_engines() -> dict[str, Callable[[], CacheEngine]]:
    """Engines available in this installation, by name (vllm-mlx where it is installed)."""
    engines: dict[str, Callable[[], CacheEngine]] = {"apc": APCEngine,
                                                    "prompt-cache": PromptCacheStateEngine}
    if vllm_mlx_available():
        engines["vllm-mlx"] = VllmMlxEngine
    return engines


@dataclass
class Expectation:
    """What a step should give: HIT, PARTIAL or MISS."""

    outcome: str

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise CacheEngineError(f"unknown outcome {self.outcome!r}: use HIT, PARTIAL or MISS")

    def __str__(self) -> str:
        return self.outcome


def classify(cached: int, prompt: int, slack: int) -> str:
    """HIT when the engine reused the prompt up to its granularity, MISS when nothing."""
    if cached <= 0:
        return "MISS"
    if cached >= prompt - max(slack, 1):
        return "HIT"
    return "PARTIAL"


def compare_outputs(cached: Sample, cold: Sample) -> tuple[bool, str]:
    """The same first-token distribution as a cold run (greedy tokens where none is kept)."""
    if cached.first_logprobs is not None and cold.first_logprobs is not None:
        import numpy as np

        diff = float(np.max(np.abs(cached.first_logprobs - cold.first_logprobs)))
        if not diff <= LOGPROB_TOLERANCE:
            same = cached.token_ids == cold.token_ids
            return False, (f"first-token log-probabilities differ by up to {diff:.3g}"
                           + ("" if same else ", and so do the generated tokens"))
        return True, ""
    if cached.token_ids != cold.token_ids:
        index = next((i for i, (a, b) in enumerate(zip(cached.token_ids, cold.token_ids)) if a != b),
                     min(len(cached.token_ids), len(cold.token_ids)))
        return False, f"generated tokens differ from token {index}"
    return True, ""


def judge(result: StepResult, expect: Expectation | str) -> bool:
    """Hold a step to an expected outcome (and the cold run's output); sets ``passed``."""
    expected = expect if isinstance(expect, Expectation) else Expectation(expect)
    result.expected = str(expected)
    matches = not result.error and result.outcome == expected.outcome
    result.passed = matches and result.correct is not False
    return result.passed


def conclude(result: StepResult, slack: int, output: tuple[bool | None, str],
             expect: Expectation | str | None) -> StepResult:
    """A step that ran: its outcome from the tokens reused, its output against the cold run's
    (``output``: correct, difference), held to ``expect`` when given."""
    result.outcome = classify(result.cached_tokens, result.prompt_tokens, slack)
    result.correct, result.difference = output
    result.passed = result.correct is not False
    if expect is not None:
        judge(result, expect)
    return result


@dataclass
class CacheSession:
    """Runs steps through one engine on one model and keeps their results."""

    model: Any
    processor: Any
    engine: CacheEngine
    max_tokens: int = 8
    steps: list[StepResult] = field(default_factory=list)
    measure: Callable[[GenerationRequest], Sample] | None = None

    def __post_init__(self) -> None:
        self.engine.reset()

    def _run(self, request: GenerationRequest) -> Sample:
        if self.measure is not None:
            return self.measure(request)
        return measure_generation(self.model, self.processor, request)

    def step(self, name: str, image: Any, prompt: str, expect: Expectation | str | None,
             description: str = "") -> StepResult:
        """One real generation through the engine, checked against a cold run of the same input.

        With ``expect`` None the step only has to answer as the cold run does; ``judge`` can
        hold it to an outcome afterwards."""
        result = StepResult(step=name, description=description or name, expected="-")
        video = image if isinstance(image, VideoInput) else None  # a clip: mlx_video_clip(frames, fps)
        image = None if video else image
        base = GenerationRequest(image=image, prompt=prompt, max_tokens=self.max_tokens,
                                 capture_logprobs=True, video=video)
        try:
            cold = self._run(base)
        except Exception as exc:  # noqa: BLE001 - bad input fails this step only
            result.error = f"the input could not be run (cold, without the engine): {type(exc).__name__}: {exc}"
            self.steps.append(result)
            return result
        try:
            request = GenerationRequest(
                image=image, prompt=prompt, max_tokens=self.max_tokens, capture_logprobs=True, video=video,
                generate_kwargs=self.engine.generate_kwargs(base, cold.input_ids),
            )
            try:
                sample = self._run(request)
            finally:
                getattr(self.engine, "finish", lambda: None)()
        except Exception as exc:  # noqa: BLE001 - an engine's failure fails this step only
            result.error = f"the engine raised {type(exc).__name__}: {exc}"
            self.steps.append(result)
            return result
        result.cached_tokens = sample.cached_tokens
        result.prompt_tokens = sample.prompt_tokens
        result.ttft_s, result.cold_ttft_s = sample.ttft_s, cold.ttft_s
        self.steps.append(result)
        return conclude(result, self.engine.slack, compare_outputs(sample, cold), expect)

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if not s.passed]

