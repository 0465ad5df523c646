"""Repository-level test configuration.

pytester's in-process runs drop modules first imported inside them, and numpy-based
extensions cannot be imported twice in one process: import them here, once.
(The built-in suite lives inside this checkout, so inner sessions load this file too:
keep it free of fixtures and hooks.)
"""

import mlx.core  # noqa: F401
import mlx_vlm  # noqa: F401
import mlx_vlm.models.qwen3_vl  # noqa: F401
import numpy  # noqa: F401
import scipy.stats  # noqa: F401

import pytest_mlxvlm.measure.runner  # noqa: F401
import pytest_mlxvlm.reports.report  # noqa: F401
