"""Exports for continuous-benchmarking services, validated against the shapes their docs give:
Bencher Metric Format (bencher.dev/bmf.json) and github-action-benchmark's custom tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pytest_mlxvlm.reports import exports
from pytest_mlxvlm.results import METRICS, CaseResult, Sample

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema comes with the dev extra")

# Bencher's published JSON schema of the Bencher Metric Format.
BMF_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "patternProperties": {".+": {
        "type": "object",
        "patternProperties": {".+": {
            "type": "object",
            "properties": {"value": {"type": "number"}, "lower_value": {"type": "number"},
                           "upper_value": {"type": "number"}},
            "required": ["value"],
        }},
    }},
}
# github-action-benchmark's customBiggerIsBetter / customSmallerIsBetter input: a list of
# results with a name, a unit and a value, and optionally a range and extra text.
GITHUB_BENCHMARK_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "unit": {"type": "string"}, "value": {"type": "number"},
                       "range": {"type": "string"}, "extra": {"type": "string"}},
        "required": ["name", "unit", "value"],
        "additionalProperties": False,
    },
}
WORKFLOWS = Path(__file__).parents[1] / "examples" / "workflows"


def _result(rounds: int, side: str = "", speed: float = 50.0) -> CaseResult:
    samples = [Sample(1.0 + i / 100, 0.1, 0.01, 0.09, 90, 64, 64, 10, 1000.0, speed + i, speed * 1.2 + i, 0.5)
               for i in range(rounds)]
    return CaseResult(model="org/m", resolution="224x224", samples=samples, case_key="test_image_generation[224x224]",
                      test_id="t.py::test_image_generation[224x224]", side=side)


def test_bencher_metric_format_has_each_median_and_its_interval():
    document = exports.bmf_document([_result(10), _result(3, side="base")])
    jsonschema.validate(document, BMF_SCHEMA)
    (name,) = document
    assert name == "org/m test_image_generation[224x224]"
    speed = document[name]["end-to-end-tps"]
    assert speed["lower_value"] <= speed["value"] <= speed["upper_value"]
    assert speed["value"] == _result(10).summary("end_to_end_tps").median
    assert set(document[name]) == {m.replace("_", "-") for m, spec in METRICS.items() if spec.better != "exact"}
    assert all(len(measure) <= 64 for measure in document[name])
    few = exports.bmf_document([_result(3)])[name]["generation-tps"]  # too few rounds for an interval
    assert set(few) == {"value"}


def test_github_action_benchmark_lists_by_direction():
    lists = exports.github_benchmark_lists([_result(10)], {"key": "cpu-test", "mlx": "9.9.9"})
    for entries in lists.values():
        jsonschema.validate(entries, GITHUB_BENCHMARK_SCHEMA)
    bigger, smaller = lists[exports.BIGGER_FILE], lists[exports.SMALLER_FILE]
    assert {e["unit"] for e in bigger} == {"tok/s"} and "tok/s" not in {e["unit"] for e in smaller}
    speed = next(e for e in bigger if e["name"] == "org/m test_image_generation[224x224] Speed")
    assert speed["range"].endswith("(95% interval of the median)")
    assert speed["extra"] == "median of 10 rounds on cpu-test, mlx 9.9.9"
    assert len(bigger) + len(smaller) == len(exports.EXPORTED)


def test_a_session_writes_both_exports(fake: pytest.Pytester):
    result = fake.runpytest("--mlx-model", "fake:a", "--mlx-resolutions", "224x224,448x448", "--mlx-rounds", "6",
                            "-p", "no:benchmark", "--mlx-bmf", "out/bmf.json", "--mlx-github-benchmark", "gab")
    result.assert_outcomes(passed=2)
    bmf = json.loads((fake.path / "out" / "bmf.json").read_text())
    jsonschema.validate(bmf, BMF_SCHEMA)
    assert len(bmf) == 2 and all("lower_value" in m["end-to-end-tps"] for m in bmf.values())
    for name in (exports.BIGGER_FILE, exports.SMALLER_FILE):
        entries = json.loads((fake.path / "gab" / name).read_text())
        jsonschema.validate(entries, GITHUB_BENCHMARK_SCHEMA)
        assert entries
    result.stdout.fnmatch_lines(["*Bencher file written to *bmf.json*", "*github-action-benchmark files written to *gab*"], consecutive=False)


def test_an_export_that_cannot_be_written_loses_no_other_output(fake: pytest.Pytester):
    (fake.path / "gab").write_text("a file, not a folder")
    result = fake.runpytest("--mlx-model", "fake:a", "--mlx-resolutions", "224x224", "--mlx-rounds", "3",
                            "-p", "no:benchmark", "--mlx-github-benchmark", "gab", "--mlx-bmf", "bmf.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["mlxvlm: github-action-benchmark files not written to *gab*"])
    assert json.loads((fake.path / "bmf.json").read_text())


def _steps(name: str) -> list[dict]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    return [step for job in doc["jobs"].values() for step in job["steps"]]


def _commands(steps: list[dict]) -> str:
    """What the steps run: their scripts and the pytest arguments they give the plugin's action."""
    return " ".join([s.get("run", "") for s in steps] + [s.get("with", {}).get("pytest-args", "") for s in steps])


def test_the_bencher_workflow_uploads_the_file_it_writes():
    runs = _commands(_steps("bencher.yml"))
    assert "--mlx-bmf bmf.json" in runs and "bencher run" in runs
    assert "--adapter json --file bmf.json" in runs


def test_the_github_action_benchmark_workflow_reads_one_file_per_direction():
    steps = _steps("github-action-benchmark.yml")
    assert "--mlx-github-benchmark benchmark-out" in _commands(steps)
    actions = [s["with"] for s in steps if str(s.get("uses", "")).startswith("benchmark-action/")]
    assert {(a["tool"], a["output-file-path"]) for a in actions} == {
        ("customBiggerIsBetter", f"benchmark-out/{exports.BIGGER_FILE}"),
        ("customSmallerIsBetter", f"benchmark-out/{exports.SMALLER_FILE}")}


def test_the_team_database_workflow_writes_and_reports_from_one_url():
    steps = _steps("team-database.yml")
    (sweep,) = [s for s in steps if "pytest-mlxvlm@" in s.get("uses", "") and "model" in s["with"]]
    (report,) = [s for s in steps if 'pytest-mlxvlm report "$HISTORY_URL"' in s.get("run", "")]
    assert sweep["with"]["history"] == report["env"]["HISTORY_URL"] == "${{ secrets.MLXVLM_HISTORY_URL }}"
    assert "postgresql" in sweep["with"]["extras"]
