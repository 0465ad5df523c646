"""Results of several machines in one report, grouped by chip (pure functions, no pytest)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .report import by_model, model_section
from .results import MERGED_SCHEMA, REPORT_SCHEMA, CaseResult


class MergeError(ValueError):
    """A report that cannot be merged; the message names the file."""


@dataclass
class Report:
    """One ``--mlx-json`` report: where it came from, its machine and its results."""

    path: Path
    machine: dict[str, Any]
    settings: dict[str, Any]
    results: list[CaseResult]
    load_times: dict[str, float]

    @property
    def chip(self) -> str:
        return str(self.machine["key"])


def load(path: Path) -> Report:
    """Read a ``--mlx-json`` report; MergeError names the file and what is wrong."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MergeError(f"cannot read {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema_version") != REPORT_SCHEMA or "results" not in doc:
        raise MergeError(f"{path} is not a pytest-mlxvlm --mlx-json report (schema_version {REPORT_SCHEMA})")
    try:
        results = [CaseResult.from_dict(r) for r in doc["results"]]
        machine = dict(doc["machine"])
        machine["key"]
    except (KeyError, TypeError) as exc:
        raise MergeError(f"{path}: missing field {exc}") from None
    return Report(path, machine, dict(doc.get("settings", {})), results,
                  dict(doc.get("load_times_s", {})))


def by_chip(reports: Sequence[Report]) -> dict[str, list[Report]]:
    """Reports grouped by chip key, chips in name order, reports in the order given."""
    grouped: dict[str, list[Report]] = {}
    for rep in reports:
        grouped.setdefault(rep.chip, []).append(rep)
    return dict(sorted(grouped.items()))


def markdown(reports: Sequence[Report]) -> str:
    """One Markdown report: Speed of every case across chips, then each chip's full tables."""
    groups = by_chip(reports)
    chips = list(groups)
    lines = [f"# pytest-mlxvlm: {len(reports)} report(s) from {len(chips)} chip(s)", ""]
    speeds: dict[tuple[str, str], dict[str, list[float]]] = {}
    for chip, reps in groups.items():
        for rep in reps:
            for r in rep.results:
                speeds.setdefault((r.model, r.case_key or r.resolution), {}).setdefault(chip, []).append(
                    r.summary("end_to_end_tps").median)
    lines += ["## Speed (end-to-end tok/s, median) by chip", "",
              "| Model | Case | " + " | ".join(chips) + " |",
              "|---|---|" + "---|" * len(chips)]
    for (model, case), per_chip in speeds.items():  # in the order measured
        cells = [" / ".join(f"{v:.1f}" for v in per_chip[c]) if c in per_chip else "-" for c in chips]
        lines.append(f"| {model} | `{case.rpartition('::')[2]}` | " + " | ".join(cells) + " |")
    lines.append("")
    for chip, reps in groups.items():
        machine = reps[0].machine
        lines += [f"## {chip}", "",
                  f"{machine.get('chip', chip)}, {machine.get('backend', '?')}, "
                  f"mlx {machine.get('mlx', '?')}, mlx-vlm {machine.get('mlx_vlm', '?')}", ""]
        for rep in reps:
            for model, cases in by_model(rep.results).items():
                lines += [f"### {model} (`{rep.path.name}`)", ""]
                lines += model_section(model, cases, rep.load_times.get(model))
                lines.append("")
    return "\n".join(lines)


def merged_document(reports: Sequence[Report]) -> dict[str, Any]:
    """All reports in one JSON document, grouped by chip."""
    return {
        "schema": MERGED_SCHEMA,
        "chips": {
            chip: {
                "machine": reps[0].machine,
                "reports": [{"file": str(rep.path), "machine": rep.machine, "settings": rep.settings,
                             "load_times_s": rep.load_times,
                             "results": [r.to_dict() for r in rep.results]} for rep in reps],
            }
            for chip, reps in by_chip(reports).items()
        },
    }
