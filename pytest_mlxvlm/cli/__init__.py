"""The pytest-mlxvlm command (``pytest-mlxvlm``, ``python -m pytest_mlxvlm``)."""

from .main import main

__all__ = ["main"]
