"""A real slowdown for benchmark experiments: extra work in every forward pass of the model.

``SlowdownInjector(columns)`` is a pytest plugin: after a model is loaded it wraps the language
model's final norm so that every forward pass also multiplies the normalized hidden states by a
random (hidden x columns) matrix, and keeps the product in the graph (added times zero), so
MLX cannot skip it. The cost per generated token is hidden x columns multiply-adds and the
reads of that matrix: more columns, more slowdown. ``columns=0`` leaves the model untouched.
"""

from __future__ import annotations

from typing import Any

import pytest


class _SlowNorm:
    """Wraps a norm module: same output, plus an extra matmul kept in the graph."""

    def __init__(self, inner: Any, columns: int) -> None:
        import mlx.core as mx

        self.inner = inner
        hidden = inner.weight.shape[0]
        self.extra = mx.random.normal((hidden, columns), key=mx.random.key(0)).astype(inner.weight.dtype)
        mx.eval(self.extra)

    def __call__(self, x: Any) -> Any:
        y = self.inner(x)
        waste = (y @ self.extra).sum(axis=-1, keepdims=True)
        return y + 0 * waste


def inject(model: Any, columns: int) -> Any:
    """Wrap the final norm of the language model; returns the original to restore it."""
    import mlx.nn as nn

    inner_model = model.language_model.model
    original = inner_model.norm

    class SlowNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.slow = _SlowNorm(original, columns)

        def __call__(self, x: Any) -> Any:
            return self.slow(x)

    inner_model.norm = SlowNorm()
    return original


class SlowdownInjector:
    """pytest plugin: inject ``columns`` of extra work into each loaded model."""

    def __init__(self, columns: int) -> None:
        self.columns = columns

    @pytest.hookimpl(hookwrapper=True)
    def pytest_mlxvlm_load_model(self, spec: str, settings: Any):  # type: ignore[no-untyped-def]
        outcome = yield
        loaded = outcome.get_result()
        if self.columns and loaded is not None and getattr(loaded, "model", None) is not None:
            inject(loaded.model, self.columns)


def pytest_configure(config: pytest.Config) -> None:
    """With ``-p slowdown`` (benchmarks/ on sys.path), inject ``$MLXVLM_INJECT_COLUMNS``."""
    import os

    columns = int(os.environ.get("MLXVLM_INJECT_COLUMNS", "0") or 0)
    if columns:
        config.pluginmanager.register(SlowdownInjector(columns), "mlxvlm-slowdown")
