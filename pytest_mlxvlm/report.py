"""Reports: the terminal table per model and the JSON document (pure functions)."""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from .runner import METRICS, CaseResult

SCHEMA_VERSION = 1

COLUMNS = (
    "Resolution",
    "Pixels",
    "Time",
    "Tokens",
    "Speed",
    "TTFT",
    "Prefill",
    "Decode",
    "Image tok",
    "Peak mem",
    "Spread",
)


def _fmt_pixels(pixels: int) -> str:
    if not pixels:
        return "-"
    return f"{pixels / 1e6:.2f}M" if pixels >= 1e6 else f"{pixels / 1e3:.0f}K"


def case_row(result: CaseResult, label: str | None = None) -> list[str]:
    """One table row: medians of each metric, and the spread of Speed (IQR / median)."""
    med = {m: result.summary(m).median for m in METRICS}
    speed = result.summary("end_to_end_tps")
    return [
        label or result.resolution,
        _fmt_pixels(result.width * result.height),
        f"{med['time_s']:.2f}s",
        f"{med['generation_tokens']:.0f}",
        f"{med['end_to_end_tps']:.1f} tok/s",
        f"{med['ttft_s'] * 1000:.0f}ms",
        f"{med['prompt_tps']:.0f} tok/s",
        f"{med['generation_tps']:.1f} tok/s",
        f"{med['image_tokens']:.0f}",
        f"{med['peak_memory']:.2f}GB",
        f"±{speed.spread * 100:.1f}% (n={speed.n})",
    ]


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown-compatible table with aligned columns."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return [line(header), sep, *(line(r) for r in rows)]


def aggregate(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Totals over the cases, per round: configs, total time, total tokens, aggregate tok/s."""
    speeds = [r.summary("end_to_end_tps").median for r in results]
    total_time = sum(r.summary("time_s").median for r in results)
    total_tokens = sum(r.summary("generation_tokens").median for r in results)
    fastest = max(results, key=lambda r: r.summary("end_to_end_tps").median)
    slowest = min(results, key=lambda r: r.summary("end_to_end_tps").median)
    return {
        "configs": len(results),
        "total_time_s": total_time,
        "total_tokens": int(total_tokens),
        "aggregate_tps": total_tokens / total_time if total_time else 0.0,
        "average_tps": sum(speeds) / len(speeds),
        "fastest": {"resolution": fastest.resolution, "tps": max(speeds)},
        "slowest": {"resolution": slowest.resolution, "tps": min(speeds)},
    }


def by_model(results: Sequence[CaseResult]) -> dict[str, list[CaseResult]]:
    grouped: dict[str, list[CaseResult]] = defaultdict(list)
    for result in results:
        grouped[result.model].append(result)
    return dict(grouped)


def model_section(model: str, results: Sequence[CaseResult], load_time_s: float | None) -> list[str]:
    """The lines of one model's section: table, summary line and aggregate row."""
    resolutions = [r.resolution for r in results]
    shared = len(set(resolutions)) < len(resolutions)
    rows = [case_row(r, f"{r.resolution} {r.test_name}" if shared else None) for r in results]
    lines = render_table(COLUMNS, rows)
    agg = aggregate(results)
    lines.append("")
    lines.append(
        f"Average {agg['average_tps']:.1f} tok/s across {agg['configs']} resolutions; "
        f"fastest {agg['fastest']['resolution']} ({agg['fastest']['tps']:.1f} tok/s), "
        f"slowest {agg['slowest']['resolution']} ({agg['slowest']['tps']:.1f} tok/s)"
    )
    lines.append(
        f"Aggregate: {agg['configs']} configs, {agg['total_time_s']:.2f}s total, "
        f"{agg['total_tokens']} tokens, {agg['aggregate_tps']:.1f} tok/s"
        + (f"; model loaded in {load_time_s:.2f}s" if load_time_s is not None else "")
    )
    return lines


def json_document(
    results: Sequence[CaseResult],
    *,
    settings: dict[str, Any],
    machine: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The full JSON report: settings, machine identity, every case with every sample."""
    models = {}
    for model, cases in by_model(results).items():
        models[model] = {"aggregate": aggregate(cases)}
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "pytest-mlxvlm",
        "settings": settings,
        "machine": machine,
        "metrics": {
            name: {"label": m.label, "unit": m.unit, "better": m.better}
            for name, m in METRICS.items()
        },
        "models": models,
        "results": [r.to_dict() for r in results],
        **(extra or {}),
    }


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, document: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(document, indent=2, sort_keys=False) + "\n")
