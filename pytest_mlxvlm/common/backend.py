"""Whether the installed mlx can compute here, and which extra to install when it cannot.

mlx on Linux ships its backend as an extra (``mlx[cpu]``, ``mlx[cuda12]``, ``mlx[cuda13]``), and so
does this package (``pytest-mlxvlm[cpu]`` ...): without one, ``import mlx.core`` fails, and with a
CUDA one on a machine without a working driver, no array can be evaluated.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from typing import Any

EXTRAS = ("cpu", "cuda12", "cuda13")


def cuda_major() -> int | None:
    """The CUDA version the NVIDIA driver supports (nvidia-smi's header), or None."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"CUDA Version:\s*(\d+)", out)
    return int(found.group(1)) if found else None


def suggested_extra(system: str | None = None, cuda: int | None = None) -> str | None:
    """The extra for this machine, as ./run.sh picks it: none on macOS, cuda13 / cuda12 with an
    NVIDIA driver of that CUDA version, else cpu."""
    system = system or platform.system()
    if system != "Linux":
        return None
    if cuda is None:
        return "cpu"
    return "cuda13" if cuda >= 13 else "cuda12"


def advice(system: str | None = None, cuda: int | None = None) -> str:
    """What to install, in one sentence."""
    extra = suggested_extra(system, cuda)
    if extra is None:
        return ("on macOS, mlx needs Apple silicon and macOS 14 or newer: pip install pytest-mlxvlm "
                "(no extra)")
    return (f"install an MLX backend: pip install 'pytest-mlxvlm[{extra}]' (or mlx[{extra}]; "
            f"the extras are {', '.join(EXTRAS)}; ./run.sh picks one, PYTEST_MLXVLM_BACKEND overrides it)")


def problem(check: Any = None) -> str | None:
    """Why MLX cannot compute here (one line, with the extra to install), or None when it can.

    ``check`` evaluates a tiny array (replaced in tests); an ImportError or a runtime error of it
    is the problem.
    """
    try:
        (check or _evaluate)()
    except ImportError as exc:
        return f"the installed mlx has no usable backend (import mlx.core: {_first_line(exc)}); {advice(cuda=cuda_major())}"
    except Exception as exc:  # mlx raises RuntimeError and others for a backend that cannot run
        return f"the installed mlx cannot compute on this machine ({_first_line(exc)}); {advice(cuda=cuda_major())}"
    return None


def _evaluate() -> None:
    import mlx.core as mx

    value = mx.array([1.0, 2.0]) * 2
    mx.eval(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def needs_mlx(config: Any, settings: Any, default_engine: Any) -> bool:
    """Whether this session's built-in suites load models with the built-in engine (no other
    engine registered, no server at --mlx-server-url), in this process or its workers."""
    if not settings.workload.suites or settings.server.url:
        return False
    impls = config.pluginmanager.hook.pytest_mlxvlm_load_model.get_hookimpls()
    return all(impl.function is default_engine for impl in impls)


def check_session(config: Any, settings: Any, default_engine: Any, check: Any = None) -> None:
    """pytest.UsageError naming the extra to install, when this session needs MLX and it cannot
    compute here."""
    import pytest

    if needs_mlx(config, settings, default_engine):
        reason = problem(check)
        if reason:
            raise pytest.UsageError(f"pytest-mlxvlm: {reason}")
