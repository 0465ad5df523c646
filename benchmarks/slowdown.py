"""Support of sensitivity.py, ab_jobs.py and history_demo.sh: a real slowdown injected into the model.

A real slowdown for benchmark experiments: extra work in every forward pass of the model.

Two kinds of extra work, both kept in the graph (added times zero) so MLX cannot skip them:

- ``cols:N``: after the language model's final norm, multiply the hidden states by a random
  (hidden x N) matrix: hidden x N multiply-adds and the reads of that matrix per token.
  Suits tiny models whose decode is dominated by the LM head.
- ``mlp:F``: the first F x layers decoder layers run their MLP twice: the same kind of work
  the model already does (weight reads and kernel launches), for realistic models. F above 1
  wraps around (``mlp:2``: every layer runs its MLP three times).

``SlowdownInjector(level)`` is a pytest plugin applying it after each model load;
``inject(model, level)`` applies it directly and returns a function that undoes it. As a
plugin module, from the repository root (``$MLXVLM_SLOWDOWN`` is the level):

    MLXVLM_SLOWDOWN=cols:200000 python -m pytest -p benchmarks.slowdown --pyargs \
        pytest_mlxvlm.builtin.test_mlxvlm_images --mlx-suite off --mlx-model synthetic:tiny
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


def inject(model: Any, level: str) -> Any:
    """Apply a slowdown level (``0``, ``cols:N`` or ``mlp:F``); returns an undo function."""
    import mlx.nn as nn

    kind, _, amount = str(level).partition(":")
    inner_model = model.language_model.model
    if kind in ("0", "", "none"):
        return lambda: None
    if kind == "cols":
        original = inner_model.norm

        class SlowNorm(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.slow = _SlowNorm(original, int(amount))

            def __call__(self, x: Any) -> Any:
                return self.slow(x)

        inner_model.norm = SlowNorm()

        def undo() -> None:
            inner_model.norm = original

        return undo
    if kind == "mlp":
        layers = inner_model.layers
        count = round(float(amount) * len(layers))
        # mlp:F with F > 1 wraps around: mlp:2 runs every layer's MLP three times.
        extra = [count // len(layers) + (i < count % len(layers)) for i in range(len(layers))]
        originals = [layer.mlp for layer in layers]

        class ExtraMLP(nn.Module):
            def __init__(self, inner: Any, times: int) -> None:
                super().__init__()
                self.inner = inner
                self.times = times

            def __call__(self, x: Any) -> Any:
                y = self.inner(x)
                for k in range(self.times):
                    y = y + 0 * self.inner(x * (0.5 + 0.125 * k))
                return y

        for layer, mlp, times in zip(layers, originals, extra):
            if times:
                layer.mlp = ExtraMLP(mlp, times)

        def undo() -> None:
            for layer, mlp in zip(layers, originals):
                layer.mlp = mlp

        return undo
    raise ValueError(f"unknown slowdown level {level!r}: use 0, cols:N or mlp:F")


class SlowdownInjector:
    """pytest plugin: inject a slowdown level into each loaded model."""

    def __init__(self, level: str) -> None:
        self.level = level

    @pytest.hookimpl(hookwrapper=True)
    def pytest_mlxvlm_load_model(self, spec: str, settings: Any):  # type: ignore[no-untyped-def]
        outcome = yield
        loaded = outcome.get_result()
        if loaded is not None and getattr(loaded, "model", None) is not None:
            inject(loaded.model, self.level)


def pytest_configure(config: pytest.Config) -> None:
    """With ``-p benchmarks.slowdown``, inject ``$MLXVLM_SLOWDOWN`` into each loaded model."""
    import os

    level = os.environ.get("MLXVLM_SLOWDOWN", "0")
    if level not in ("", "0"):
        config.pluginmanager.register(SlowdownInjector(level), "mlxvlm-slowdown")
