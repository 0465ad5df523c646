"""Installs for every backend: the extra each machine needs, a clear stop when mlx cannot compute,
and each extra's requirements resolving on PyPI (pip install --dry-run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mlxvlm.common import backend

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize(("system", "cuda", "extra"), [
    ("Linux", None, "cpu"), ("Linux", 12, "cuda12"), ("Linux", 11, "cuda12"), ("Linux", 13, "cuda13"),
    ("Darwin", None, None), ("Darwin", 12, None),
])
def test_the_extra_each_machine_needs(system: str, cuda: int | None, extra: str | None):
    assert backend.suggested_extra(system, cuda) == extra
    text = backend.advice(system, cuda)
    assert (f"pip install 'pytest-mlxvlm[{extra}]'" in text) if extra else ("no extra" in text)


def test_a_backend_that_cannot_compute_is_one_line_with_the_extra():
    def missing() -> None:
        raise ImportError("libmlx.so: cannot open shared object file\nmore")

    def broken() -> None:
        raise RuntimeError("[cuda] no CUDA-capable device is detected")

    text = backend.problem(missing)
    assert text is not None and "\n" not in text
    assert text.startswith("the installed mlx has no usable backend (import mlx.core: libmlx.so: "
                           "cannot open shared object file); ")
    assert "no CUDA-capable device" in (backend.problem(broken) or "")
    assert backend.problem(lambda: None) is None


def test_the_extras_follow_mlx_own():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11 and newer")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    (mlx,) = [dep for dep in project["dependencies"] if dep.startswith("mlx>=")]
    versions = mlx.partition(";")[0].removeprefix("mlx")
    for extra in backend.EXTRAS:
        assert extras[extra] == [f"mlx[{extra}]{versions}; sys_platform == 'linux'"]
    assert not any(dep.startswith("mlx[") for dep in project["dependencies"])


def test_ranges_for_users_and_pins_for_run_sh():
    """pyproject.toml states ranges (a user's repository may hold other mlx / mlx-vlm versions);
    ./run.sh installs the pinned versions of constraints.txt, which the ranges admit."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11 and newer")
    from packaging.requirements import Requirement

    deps = {Requirement(d).name: Requirement(d) for d in
            tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert set(pins) == {"mlx", "mlx-vlm"}
    for name, version in pins.items():
        spec = deps[name].specifier
        assert not any(s.operator == "==" for s in spec), f"{name} is pinned in pyproject.toml: {spec}"
        assert spec.contains(version), f"constraints.txt's {name}=={version} is outside {spec}"
    run_sh = (ROOT / "run.sh").read_text()
    assert "-c constraints.txt" in run_sh and "cat pyproject.toml constraints.txt run.sh" in run_sh


def test_a_session_stops_when_mlx_cannot_compute(pytester: pytest.Pytester):
    pytester.makeconftest("import sys\nsys.modules['mlx'] = None  # as if mlx had no backend\n")
    result = pytester.runpytest_subprocess("--mlx-model", "synthetic:tiny", "--mlx-resolutions", "224x224",
                                           "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest-mlxvlm: the installed mlx has no usable backend (import mlx.core: *"
                                 "; * install*"])


def test_a_session_with_its_own_engine_is_not_stopped(fake: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(backend, "problem", lambda check=None: "no backend here")
    fake.runpytest("--mlx-model", "fake:a", "--mlx-resolutions", "224x224", "--mlx-rounds", "3",
                   "-p", "no:benchmark").assert_outcomes(passed=1)


def _pypi_reachable() -> bool:
    import urllib.request

    try:
        urllib.request.urlopen("https://pypi.org/simple/mlx/", timeout=10).close()
    except OSError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("extra", backend.EXTRAS)
def test_each_extra_resolves_on_pypi(extra: str, tmp_path: Path):
    if sys.platform != "linux":
        pytest.skip("the backend extras are for Linux (macOS needs none)")
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable from this machine")
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(tmp_path / "report.json"), f"{ROOT}[{extra}]"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=400, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    installed = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                 for item in json.loads((tmp_path / "report.json").read_text())["install"]}
    backend_package = {"cpu": "mlx-cpu", "cuda12": "mlx-cuda-12", "cuda13": "mlx-cuda-13"}[extra]
    assert installed["mlx"] == installed[backend_package]  # mlx pins its backend's version
    assert "mlx-vlm" in installed and "sqlalchemy" in installed
