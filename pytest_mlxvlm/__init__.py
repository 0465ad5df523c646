"""pytest-mlxvlm: measure and gate vision-language-model inference speed on MLX.

The public surface is what this module exports (``__all__``): the result types a test or a
hook sees, the fixture objects' types, the fake engine for testing gates, and the hook
specifications (``pytest_mlxvlm.hookspec``). Fixtures and the ``mlx_benchmark`` marker come
with the plugin itself, no import needed. Everything else is internal and may move.

The package is layered; an import only ever points down (ARCHITECTURE.md, checked by
``tests/test_architecture.py``)::

    plugin, hookspec, testing      pytest's entry point and the public modules
    suites                         cache, server, video, batch suites and their fixtures
    harness | cli                  the pytest session side | the pytest-mlxvlm command
    gate | reports                 baselines, statistics, A/B | reports, history, stores
    measure                        generation, images, worker processes
    config | models                settings and tolerances | model sources, twins
    common                         files, validation, statistics, the machine
    results                        the vocabulary, importing nothing of the package

Names are resolved on first use, so importing the package (which pytest does at start-up)
costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_PUBLIC: dict[str, str] = {
    # results: what a test, a hook or a report sees
    "METRICS": "results",
    "Metric": "results",
    "Sample": "results",
    "CaseResult": "results",
    "GenerationRequest": "results",
    "VideoInput": "results",
    "MetricComparison": "results",
    "CaseComparison": "results",
    "StepResult": "results",
    "WorkCheck": "results",
    # the settings a test runs with (``mlx_settings``, ``mlx_resolution``)
    "Settings": "config.settings",
    "Resolution": "config.settings",
    # what the fixtures give
    "LoadedModel": "models.loading",
    "MlxBench": "harness.bench",
    "MlxCache": "suites.cachefixture",
    "VideoBench": "suites.video",
    "BatchBench": "suites.batching",
    "ServerBench": "suites.server.bench",
    # testing gates without MLX
    "FakeEngine": "measure.fake",
}

__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:  # pragma: no cover
    from .config.settings import Resolution, Settings
    from .harness.bench import MlxBench
    from .measure.fake import FakeEngine
    from .models.loading import LoadedModel
    from .results import (
        METRICS,
        CaseComparison,
        CaseResult,
        GenerationRequest,
        Metric,
        MetricComparison,
        Sample,
        StepResult,
        VideoInput,
        WorkCheck,
    )
    from .suites.batching import BatchBench
    from .suites.cachefixture import MlxCache
    from .suites.server.bench import ServerBench
    from .suites.video import VideoBench


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_mlxvlm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
