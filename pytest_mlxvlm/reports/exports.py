"""Results for continuous-benchmarking services: Bencher and github-action-benchmark.

- Bencher Metric Format (``--mlx-bmf``): ``{benchmark: {measure: {value, lower_value,
  upper_value}}}``, the median of each metric with its distribution-free 95% interval
  (stats.median_interval; the bounds are left out where too few rounds give none).
- github-action-benchmark (``--mlx-github-benchmark DIR``): ``customBiggerIsBetter.json`` (tok/s)
  and ``customSmallerIsBetter.json`` (seconds, memory), lists of ``{name, unit, value, range,
  extra}``, one file per direction as the action's two tools read them.
Token counts are a workload, not a speed, and are left out of both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..common.files import atomic_write_text, write_json
from ..common.stats import median_interval
from ..results import METRICS, CaseResult

BIGGER_FILE = "customBiggerIsBetter.json"
SMALLER_FILE = "customSmallerIsBetter.json"
EXPORTED = tuple(name for name, m in METRICS.items() if m.better in ("higher", "lower"))


def benchmark_name(result: CaseResult) -> str:
    """One case's name in both formats: ``model case`` (the case key, else the resolution)."""
    return f"{result.model} {result.case_key or result.resolution}"


def measure_slug(metric: str) -> str:
    """A Bencher measure slug (kebab case, at most 64 characters): ``generation-tps``."""
    return metric.replace("_", "-")[:64]


def _measured(results: Sequence[CaseResult]) -> list[CaseResult]:
    """The cases worth exporting: with samples, and the head side of an A/B run."""
    return [r for r in results if r.samples and r.side != "base"]


def bmf_document(results: Sequence[CaseResult]) -> dict[str, dict[str, dict[str, float]]]:
    """Bencher Metric Format: every case's medians with the interval of each."""
    document: dict[str, dict[str, dict[str, float]]] = {}
    for result in _measured(results):
        measures = document.setdefault(benchmark_name(result), {})
        for metric in EXPORTED:
            values = result.values(metric)
            entry = {"value": result.summary(metric).median}
            interval = median_interval(values)
            if interval is not None:
                entry.update(lower_value=interval[0], upper_value=interval[1])
            measures[measure_slug(metric)] = entry
    return document


def github_benchmark_lists(results: Sequence[CaseResult],
                           machine: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """github-action-benchmark entries by file: tok/s in the bigger-is-better list, seconds and
    memory in the smaller-is-better one."""
    lists: dict[str, list[dict[str, Any]]] = {BIGGER_FILE: [], SMALLER_FILE: []}
    where = ", ".join(str(v) for v in (machine.get("key"), machine.get("mlx") and f"mlx {machine['mlx']}") if v)
    for result in _measured(results):
        for metric in EXPORTED:
            spec = METRICS[metric]
            values = result.values(metric)
            interval = median_interval(values)
            entry: dict[str, Any] = {
                "name": f"{benchmark_name(result)} {spec.label}",
                "unit": spec.unit,
                "value": result.summary(metric).median,
                "extra": f"median of {len(values)} rounds" + (f" on {where}" if where else ""),
            }
            if interval is not None:
                entry["range"] = f"{interval[0]:.6g} to {interval[1]:.6g} (95% interval of the median)"
            lists[BIGGER_FILE if spec.better == "higher" else SMALLER_FILE].append(entry)
    return lists


def write_bmf(path: Path, results: Sequence[CaseResult]) -> Path:
    """Write the Bencher file atomically; returns its path."""
    write_json(path, bmf_document(results))
    return path


def write_github_benchmark(directory: Path, results: Sequence[CaseResult],
                           machine: dict[str, Any]) -> Path:
    """Write both github-action-benchmark files into ``directory``; returns the directory."""
    for name, entries in github_benchmark_lists(results, machine).items():
        atomic_write_text(Path(directory) / name, json.dumps(entries, indent=2) + "\n")
    return Path(directory)
