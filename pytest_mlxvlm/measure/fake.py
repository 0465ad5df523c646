"""A fake engine for testing gates and reports: exact, optionally noisy numbers, no MLX.

Register it from a conftest.py::

    from pytest_mlxvlm.testing import FakeEngine

    def pytest_configure(config):
        config.pluginmanager.register(FakeEngine(decode_tps=100.0), "fake-engine")

and run with ``--mlx-model fake:<name>``. Environment variables let one session differ from
another without editing files: ``FAKE_MLX_SLOWDOWN`` (time factor, e.g. 1.3),
``FAKE_MLX_NOISE`` (relative standard deviation), ``FAKE_MLX_SEED`` and
``FAKE_MLX_IMAGE_TOKENS_EXTRA`` (changes the workload); ``FAKE_MLX_SLEEP`` (seconds each
generation really takes, for what depends on wall time: progress lines, time budgets); for the
work profile, ``FAKE_MLX_EXTRA_WORK`` (added work, ``"decode_step:Multiply=60,eval=1;prefill:Convolution=1"``),
``FAKE_MLX_VERSION`` (the "mlx" part of the profile's key) and ``FAKE_MLX_OUTPUT_CHANGE_AT``
(the generated tokens change from this token on).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from ..models.loading import LoadedModel
from ..results import GenerationRequest, Sample

PREFIX = "fake:"
TEXT_TOKENS = 26  # the chat template and a prompt of up to PROMPT_WORDS words
PROMPT_WORDS = 5  # each word beyond these is one more prompt token

# The conftest.py shown above, as text: ``pytester.makeconftest(CONFTEST)``.
CONFTEST = """
from pytest_mlxvlm.testing import FakeEngine

def pytest_configure(config):
    config.pluginmanager.register(FakeEngine(), "fake-engine")
"""


def _image_size(image: Any) -> tuple[int, int]:
    if image is None:
        return 0, 0
    if hasattr(image, "size") and not isinstance(image, (str, os.PathLike)):
        return tuple(image.size)  # type: ignore[return-value]
    from PIL import Image

    with Image.open(image) as img:
        return img.size


def image_tokens(width: int, height: int) -> int:
    """Qwen3-VL's count: 32×32-pixel cells, at least 256² pixels."""
    if not width:
        return 0
    scale = max(1.0, math.sqrt(65536 / (width * height)))
    return math.ceil(width * scale / 32) * math.ceil(height * scale / 32)


@dataclass
class FakeEngine:
    """Computes samples from the image size and the prompt's words; deterministic unless noise
    is asked for."""

    decode_tps: float = 100.0
    prefill_tps: float = 1000.0
    slowdown: float = field(default_factory=lambda: float(os.environ.get("FAKE_MLX_SLOWDOWN", 1)))
    noise: float = field(default_factory=lambda: float(os.environ.get("FAKE_MLX_NOISE", 0)))
    seed: int = field(default_factory=lambda: int(os.environ.get("FAKE_MLX_SEED", 0)))
    extra_image_tokens: int = field(
        default_factory=lambda: int(os.environ.get("FAKE_MLX_IMAGE_TOKENS_EXTRA", 0))
    )
    # added work in the profile, "PHASE:NAME=N,...;...": FAKE_MLX_EXTRA_WORK="decode_step:Multiply=60,eval=1"
    extra_work: str = field(default_factory=lambda: os.environ.get("FAKE_MLX_EXTRA_WORK", ""))
    version: str = field(default_factory=lambda: os.environ.get("FAKE_MLX_VERSION", "0.0-fake"))
    # generated tokens change from this one on (0: never): FAKE_MLX_OUTPUT_CHANGE_AT=17
    output_change_at: int = field(default_factory=lambda: int(os.environ.get("FAKE_MLX_OUTPUT_CHANGE_AT", 0)))
    sleep_s: float = field(default_factory=lambda: float(os.environ.get("FAKE_MLX_SLEEP", 0)))
    calls: int = 0

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    @pytest.hookimpl(tryfirst=True)
    def pytest_mlxvlm_load_model(self, spec: str, settings: Any) -> LoadedModel | None:
        if not spec.startswith(PREFIX):
            return None
        return LoadedModel(spec=spec, path=None, model=None, processor=None, load_time_s=0.01)

    @pytest.hookimpl(tryfirst=True)
    def pytest_mlxvlm_measure(self, model: LoadedModel, request: GenerationRequest) -> Sample | None:
        if not model.spec.startswith(PREFIX):
            return None
        self.calls += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)
        sizes = [_image_size(i) for i in request.images]  # several images: their tokens add up
        width, height = sizes[0] if sizes else (0, 0)
        img = sum(image_tokens(w, h) for w, h in sizes) + self.extra_image_tokens
        prompt = img + TEXT_TOKENS + max(0, len(request.prompt.split()) - PROMPT_WORDS)
        jitter = 1.0 + (self._rng.normal(0, self.noise) if self.noise else 0.0)
        factor = self.slowdown * max(jitter, 0.05)
        preprocess = 0.001 * (1 + width * height / 1e6) * factor
        prefill = prompt / self.prefill_tps * factor
        n = request.max_tokens
        decode = (n - 1) / self.decode_tps * factor
        ttft = preprocess + prefill
        total = ttft + decode
        return Sample(
            time_s=total,
            ttft_s=ttft,
            preprocess_s=preprocess,
            prefill_s=prefill,
            prompt_tokens=prompt,
            cached_tokens=0,
            image_tokens=img,
            generation_tokens=n,
            prompt_tps=prompt / prefill,
            generation_tps=(n - 1) / decode if n > 1 else 0.0,
            end_to_end_tps=n / total,
            peak_memory=0.5 + prompt * 1e-4,
            token_ids=[1 if not self.output_change_at or i < self.output_change_at else 2 for i in range(n)],
        )


    @pytest.hookimpl(tryfirst=True)
    def pytest_mlxvlm_work_profile(self, model: LoadedModel, request: GenerationRequest
                                   ) -> tuple[Sample, dict[str, Any]] | None:
        if not model.spec.startswith(PREFIX):
            return None
        sample = self.pytest_mlxvlm_measure(model, request)
        assert sample is not None
        return sample, fake_profile(model.spec, sample, self.extra_work, self.version)


# The work of a fake generation: a small transformer's counts, exact like a real profile.
FAKE_WORK = {
    "prefill": {"primitives": {"Matmul": 24, "Softmax": 4, "Multiply": 40, "Add": 18, "Reshape": 30,
                               "Transpose": 20, "Convolution": 1}, "evals": 2, "async_evals": 1,
                "syncs": 3, "sync_kinds": {"item": 1, "tolist": 2}},
    "decode_step": {"primitives": {"Matmul": 19, "Softmax": 2, "Multiply": 32, "Add": 12, "Reshape": 20,
                                   "Transpose": 25}, "async_evals": 1, "syncs": 1, "sync_kinds": {"item": 1}},
}


def parse_extra_work(text: str) -> dict[str, dict[str, int]]:
    """``"decode_step:Multiply=60,eval=1;prefill:Convolution=1"`` -> {phase: {name: count}}."""
    out: dict[str, dict[str, int]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        phase, _, items = part.partition(":")
        for item in filter(None, (i.strip() for i in items.split(","))):
            name, _, count = item.partition("=")
            out.setdefault(phase.strip(), {})[name.strip()] = int(count or 1)
    return out


def fake_profile(spec: str, sample: Sample, extra_work: str = "", version: str = "0.0-fake") -> dict[str, Any]:
    """The work profile data of a fake generation (``FAKE_WORK`` plus ``extra_work``) and its tokens."""
    from .work import PhaseWork, summarise

    phases = {name: PhaseWork.from_dict(work) for name, work in FAKE_WORK.items()}
    for phase, changes in parse_extra_work(extra_work).items():
        work = phases.setdefault(phase, PhaseWork())
        for name, count in changes.items():
            if name in ("eval", "evals"):
                work.evals += count
            elif name in ("async_eval", "async_evals"):
                work.async_evals += count
            elif name in ("sync", "syncs", "item"):
                work.syncs += count
                work.sync_kinds["item"] = work.sync_kinds.get("item", 0) + count
            else:
                work.primitives[name] = work.primitives.get(name, 0) + count
    steps = [phases.pop("decode_step")] * max(sample.generation_tokens - 1, 0)
    key = {"engine": "fake", "mlx": version, "model": spec, "prompt_tokens": sample.prompt_tokens,
           "image_tokens": sample.image_tokens, "tokens": sample.generation_tokens}
    tail = phases.pop("tail", None)
    profile = summarise(phases, steps, tail, tokens=sample.generation_tokens, prompt_tokens=sample.prompt_tokens,
                        key=key)
    return {**profile.to_dict(), "token_ids": list(sample.token_ids)}


# -- deliberately broken prefix-cache engines (for testing the cache checks) --------------------

class _ForcedReuse:
    """A PromptCacheState told that all but the last prompt token match what it holds."""

    def __init__(self) -> None:
        from mlx_vlm.generate import PromptCacheState

        self.state = PromptCacheState()

    def kwargs(self, input_ids: list[int]) -> dict[str, Any]:
        if self.state.cache is not None and len(input_ids) > 1:
            self.state.token_ids = list(input_ids[:-1]) + [-1]
        return {"prompt_cache_state": self.state}


@dataclass
class NeverHitEngine:
    """Caches nothing: every request is computed cold."""

    name: str = "never-hit"
    description: str = "broken on purpose: never reuses anything"
    slack: int = 1

    def reset(self) -> None:
        pass

    def generate_kwargs(self, request: GenerationRequest, input_ids: list[int]) -> dict[str, Any]:
        return {}


@dataclass
class AlwaysHitEngine:
    """Reuses the previous request's KV state for every request, whatever it was."""

    name: str = "always-hit"
    description: str = "broken on purpose: reuses the last request's state for any input"
    slack: int = 1
    reuse: Any = None

    def reset(self) -> None:
        self.reuse = _ForcedReuse()

    def generate_kwargs(self, request: GenerationRequest, input_ids: list[int]) -> dict[str, Any]:
        return self.reuse.kwargs(input_ids)


@dataclass
class PromptKeyedEngine:
    """Keys the cache on the prompt text only, so another image's state answers (vllm-mlx #718)."""

    name: str = "prompt-keyed"
    description: str = "broken on purpose: cache key ignores the image"
    slack: int = 1
    by_prompt: dict[str, Any] = field(default_factory=dict)

    def reset(self) -> None:
        self.by_prompt = {}

    def generate_kwargs(self, request: GenerationRequest, input_ids: list[int]) -> dict[str, Any]:
        reuse = self.by_prompt.setdefault(request.prompt, _ForcedReuse())
        return reuse.kwargs(input_ids)


class BrokenCacheEngines:
    """pytest plugin offering the three broken engines through ``pytest_mlxvlm_cache_engines``."""

    def pytest_mlxvlm_cache_engines(self, config: Any) -> dict[str, Any]:
        return {"never-hit": NeverHitEngine, "always-hit": AlwaysHitEngine,
                "prompt-keyed": PromptKeyedEngine}
