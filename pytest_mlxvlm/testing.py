"""A fake engine for testing gates and reports: exact, optionally noisy numbers, no MLX.

Register it from a conftest.py::

    from pytest_mlxvlm.testing import FakeEngine

    def pytest_configure(config):
        config.pluginmanager.register(FakeEngine(decode_tps=100.0), "fake-engine")

and run with ``--mlx-model fake:<name>``. Environment variables let one session differ from
another without editing files: ``FAKE_MLX_SLOWDOWN`` (time factor, e.g. 1.3),
``FAKE_MLX_NOISE`` (relative standard deviation), ``FAKE_MLX_SEED`` and
``FAKE_MLX_IMAGE_TOKENS_EXTRA`` (changes the workload).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from .models import LoadedModel
from .results import GenerationRequest, Sample

PREFIX = "fake:"
TEXT_TOKENS = 26

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
    """Computes samples from the image size; deterministic unless noise is asked for."""

    decode_tps: float = 100.0
    prefill_tps: float = 1000.0
    slowdown: float = field(default_factory=lambda: float(os.environ.get("FAKE_MLX_SLOWDOWN", 1)))
    noise: float = field(default_factory=lambda: float(os.environ.get("FAKE_MLX_NOISE", 0)))
    seed: int = field(default_factory=lambda: int(os.environ.get("FAKE_MLX_SEED", 0)))
    extra_image_tokens: int = field(
        default_factory=lambda: int(os.environ.get("FAKE_MLX_IMAGE_TOKENS_EXTRA", 0))
    )
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
        width, height = _image_size(request.image)
        img = image_tokens(width, height) + self.extra_image_tokens
        prompt = img + TEXT_TOKENS
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
            token_ids=[1] * n,
        )


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
