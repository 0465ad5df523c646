"""Hooks that pytest-mlxvlm calls; implement them in a conftest.py or a plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .config.settings import Settings
    from .models.loading import LoadedModel
    from .results import CaseResult, GenerationRequest, Sample


@pytest.hookspec(firstresult=True)
def pytest_mlxvlm_load_model(spec: str, settings: Settings) -> LoadedModel | None:
    """Load the model named by ``spec``; return None to leave it to the next implementation."""


@pytest.hookspec(firstresult=True)
def pytest_mlxvlm_measure(model: LoadedModel, request: GenerationRequest) -> Sample | None:
    """Run and time one generation; return None to leave it to the next implementation."""


@pytest.hookspec(firstresult=True)
def pytest_mlxvlm_work_profile(model: LoadedModel, request: GenerationRequest) -> tuple[Sample, dict[str, Any]] | None:
    """Run one untimed generation and record its work profile: ``(sample, profile data)``, the
    data as ``WorkProfile.to_dict()`` plus ``token_ids``; None to leave it to the next one."""


@pytest.hookspec
def pytest_mlxvlm_update_machine_info(config: pytest.Config, machine: dict[str, Any]) -> None:
    """Amend the machine identity in place (chip key, memory, extra fields)."""


@pytest.hookspec
def pytest_mlxvlm_case_finished(config: pytest.Config, result: CaseResult) -> None:
    """Called after each measured case with its samples."""


@pytest.hookspec
def pytest_mlxvlm_cache_engines(config: pytest.Config) -> dict[str, Any] | None:
    """Offer prefix-cache engines: a dict of name -> factory returning a CacheEngine."""


@pytest.hookspec
def pytest_mlxvlm_cache_expectations(engine: str, expectations: dict[str, str]) -> None:
    """Amend, in place, the expected outcome (HIT, PARTIAL, MISS) of cache steps for an engine."""
