"""Results of several machines in one report, grouped by chip (pure functions, no pytest)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from ..common.validate import InvalidInput, get, join, kind, lst, number, obj, read_json, schema_is, show, text
from ..results import MERGED_SCHEMA, METRICS, REPORT_SCHEMA, CaseResult, Sample
from .report import by_model, model_section


class MergeError(InvalidInput):
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


SAMPLE_FIELDS = tuple(f.name for f in fields(Sample) if not f.metadata.get("skip"))


def check_report(doc: Any, *, full: bool = True) -> dict[str, Any]:
    """A ``--mlx-json`` report whose fields have the types that are read; InvalidInput names the
    field. ``full``: everything merge rebuilds; else what ``compare`` reads (machine, and the
    model, case and samples of each result)."""
    doc = obj(doc, "")
    version = doc.get("schema_version")
    if version is not None and not schema_is(version, REPORT_SCHEMA):
        raise InvalidInput(f"schema_version {show(version)} is not {REPORT_SCHEMA}")
    machine = obj(get(doc, "machine"), "machine")
    text(get(machine, "key", "machine"), "machine.key")
    sample_fields = SAMPLE_FIELDS if full else tuple(METRICS)
    for i, result in enumerate(lst(get(doc, "results"), "results")):
        where = join("results", i)
        result = obj(result, where)
        text(get(result, "model", where), join(where, "model"))
        for key in ("case_key", "test_id", "outcome", "side"):
            text(result.get(key), join(where, key), optional=True)
        if full or "resolution" in result or not result.get("case_key"):
            text(get(result, "resolution", where), join(where, "resolution"))
        groups = [("samples", lst(get(result, "samples", where), join(where, "samples"), nonempty=True))]
        if full:
            groups.append(("warmup_samples", lst(result.get("warmup_samples"), join(where, "warmup_samples"),
                                                 optional=True)))
        for name, samples in groups:
            for j, sample in enumerate(samples):
                at = join(join(where, name), j)
                sample = obj(sample, at)
                for key in sample_fields:
                    number(get(sample, key, at), join(at, key))
        if not full:
            continue
        obj(result.get("workload"), join(where, "workload"), optional=True)
        number(result.get("load_time_s"), join(where, "load_time_s"), optional=True)
        bandwidth = obj(result.get("bandwidth"), join(where, "bandwidth"), optional=True)
        if bandwidth:
            for key in ("gbps", "fraction", "limit_tps"):
                number(get(bandwidth, key, join(where, "bandwidth")), join(join(where, "bandwidth"), key))
        comparison = obj(result.get("comparison"), join(where, "comparison"), optional=True)
        if comparison:
            text(get(comparison, "key", join(where, "comparison")), join(where, "comparison.key"))
            text(get(comparison, "status", join(where, "comparison")), join(where, "comparison.status"))
            for j, metric in enumerate(lst(comparison.get("metrics"), join(where, "comparison.metrics"),
                                           optional=True)):
                obj(metric, join(join(where, "comparison.metrics"), j))
    if full:
        obj(doc.get("settings"), "settings", optional=True)
        for model, seconds in obj(doc.get("load_times_s"), "load_times_s", optional=True).items():
            number(seconds, join("load_times_s", model))
    return doc


def load(path: Path) -> Report:
    """Read a ``--mlx-json`` report; MergeError names the file and what is wrong."""
    try:
        doc = read_json(path, nonfinite=True)  # a comparison's change may be infinite
    except InvalidInput as exc:
        raise MergeError(f"cannot read {path}: {str(exc).removeprefix('cannot read: ')}") from None
    if not isinstance(doc, dict) or not schema_is(doc.get("schema_version"), REPORT_SCHEMA):
        what = f"the top level is {kind(doc)}" if not isinstance(doc, dict) else f"schema_version {REPORT_SCHEMA}"
        raise MergeError(f"{path} is not a pytest-mlxvlm --mlx-json report ({what})")
    try:
        check_report(doc)
    except InvalidInput as exc:
        raise MergeError(f"{path}: {exc}") from None
    results = []
    for i, raw in enumerate(doc["results"]):
        try:
            results.append(CaseResult.from_dict(raw))
        except (KeyError, TypeError, ValueError) as exc:  # a comparison of another shape
            raise MergeError(f"{path}: results[{i}] cannot be read ({type(exc).__name__}: {exc})") from None
    return Report(path, dict(doc["machine"]), dict(doc.get("settings") or {}), results,
                  dict(doc.get("load_times_s") or {}))


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
