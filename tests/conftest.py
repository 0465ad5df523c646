"""Shared fixtures of the repository's tests."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _synthetic_cache(tmp_path_factory: pytest.TempPathFactory):
    """Build synthetic models once per test session, away from the user's cache."""
    previous = os.environ.get("PYTEST_MLXVLM_CACHE")
    os.environ["PYTEST_MLXVLM_CACHE"] = str(tmp_path_factory.mktemp("mlxvlm-cache"))
    yield
    if previous is None:
        os.environ.pop("PYTEST_MLXVLM_CACHE", None)
    else:
        os.environ["PYTEST_MLXVLM_CACHE"] = previous
