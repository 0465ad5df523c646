"""Support of every script here: the built-in suite's arguments, in-process sessions, the launch probe.

What the benchmark scripts share: the built-in suite's arguments, in-process sessions with
the model loaded once, one prepared generation, the launch probe, JSON lines, argument parsing.

Heavy libraries (mlx, mlx_vlm) are imported inside the functions that use them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from pytest_mlxvlm.config.settings import DEFAULT_PROMPT, parse_resolution
from pytest_mlxvlm.measure.images import image_file
from pytest_mlxvlm.models import loading as models
from pytest_mlxvlm.results import GenerationRequest

# The built-in image suite without the cache suite, as every experiment runs it.
BUILTIN_SUITE = ["--pyargs", "pytest_mlxvlm.builtin.test_mlxvlm_images", "--mlx-suite", "off"]
# Plugins an experiment's in-process session leaves out: no pytest-benchmark, no .pytest_cache.
QUIET_SESSION = ["-q", "-p", "no:benchmark", "-p", "no:cacheprovider"]


def case_median(case: dict[str, Any], metric: str) -> float:
    """A metric's median over the measured samples of one case of a --mlx-json report."""
    return statistics.median(float(sample[metric]) for sample in case["samples"])


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser for ``python -m benchmarks.<script>``, described by the script's
    docstring: its first line above the options, the rest (with the usage examples) below."""
    first, _, rest = (doc or "").strip().partition("\n")
    return argparse.ArgumentParser(prog=f"python -m benchmarks.{Path(sys.argv[0]).stem}",
                                   description=first, epilog=rest.strip() or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def workdir(path: str | Path | None, prefix: str) -> Path:
    """``path`` (created if needed), or a fresh temporary folder named after ``prefix``."""
    folder = Path(path) if path else Path(tempfile.mkdtemp(prefix=f"mlxvlm-{prefix}-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def server_url(url: str | None, folder: Path) -> Iterator[str]:
    """``url``, or the URL of an ``mlx_vlm.server`` started here on the model at ``folder`` (and
    stopped on every way out)."""
    if url is not None:
        yield url
        return
    from pytest_mlxvlm.suites.server.process import ServerProcess

    process = ServerProcess(model=str(folder), timeout_s=300)
    process.start()
    try:
        yield process.url
    finally:
        process.stop()


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line (experiments append as they go, so a stopped run keeps its rows)."""
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


class ModelCache:
    """pytest plugin: load each model once for all sessions of this process."""

    def __init__(self) -> None:
        self.loaded: dict[str, Any] = {}

    def get(self, spec: str) -> Any:
        if spec not in self.loaded:
            self.loaded[spec] = models.load(spec)
        return self.loaded[spec]

    @pytest.hookimpl(tryfirst=True)
    def pytest_mlxvlm_load_model(self, spec: str, settings: Any) -> Any:
        return self.get(spec)


def run_session(args: list[str], cache: ModelCache, json_path: Path) -> dict[str, Any]:
    """One real pytest session in this process, its ``--mlx-json`` report read back."""
    start = time.perf_counter()
    code = pytest.main([*args, f"--mlx-json={json_path}", *QUIET_SESSION], plugins=[cache])
    doc = json.loads(json_path.read_text())
    return {"exit": int(code), "doc": doc, "seconds": time.perf_counter() - start}


def prepare(model: str, resolution: str, max_tokens: int) -> tuple[Any, Path, GenerationRequest]:
    """A loaded model, the synthetic image at ``resolution`` and a request with the default prompt."""
    loaded = models.load(model)
    image = image_file(parse_resolution(resolution), Path(tempfile.mkdtemp(prefix="mlxvlm-image-")))
    return loaded, image, GenerationRequest(image=image, prompt=DEFAULT_PROMPT, max_tokens=max_tokens)


def launch_probe(n: int = 3000) -> float:
    """Seconds per tiny kernel launched and evaluated on its own (host and driver cost)."""
    import mlx.core as mx

    x = mx.zeros((16,))
    mx.eval(x)
    start = time.perf_counter()
    for _ in range(n):
        x = x + 1
        mx.eval(x)
    return (time.perf_counter() - start) / n


def compute_probe(size: int = 4096, n: int = 20) -> float:
    """Seconds per large bf16 matmul (the device itself)."""
    import mlx.core as mx

    a = mx.random.normal((size, size)).astype(mx.bfloat16)
    mx.eval(a @ a)
    start = time.perf_counter()
    for _ in range(n):
        mx.eval(a @ a)
    return (time.perf_counter() - start) / n
