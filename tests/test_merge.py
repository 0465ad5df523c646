"""Reports of several machines in one (``pytest-mlxvlm merge``), grouped by chip.

The H200 reports under tests/data/merge/ are the committed sweeps of docs/results/h200/,
trimmed to two resolutions and three samples per case (see tests/data/README.md).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mlxvlm.cli.main import main
from pytest_mlxvlm.reports import merge
from pytest_mlxvlm.results import MERGED_SCHEMA

DATA = Path(__file__).parent / "data" / "merge"
SWEEPS = sorted(DATA.glob("sweep-*.json"))


def _report(path: Path, chip: str, speeds: dict[str, float], model: str = "m") -> Path:
    """A minimal --mlx-json report: one sample per case, only Speed matters here."""
    def sample(speed: float) -> dict:
        return {"time_s": 64 / speed, "ttft_s": 0.1, "preprocess_s": 0.01, "prefill_s": 0.09,
                "prompt_tokens": 90, "cached_tokens": 0, "image_tokens": 64, "generation_tokens": 64,
                "prompt_tps": 1000.0, "generation_tps": speed, "end_to_end_tps": speed,
                "peak_memory": 1.0}

    doc = {"schema_version": 1, "machine": {"key": chip, "chip": chip.upper(), "backend": "metal"},
           "results": [{"model": model, "resolution": res, "case_key": f"mod::t[{res}]",
                        "samples": [sample(v)]} for res, v in speeds.items()]}
    path.write_text(json.dumps(doc))
    return path


def test_the_fixtures_are_reports_of_one_chip():
    reports = [merge.load(p) for p in SWEEPS]
    assert {r.chip for r in reports} == {"nvidia-h200"}
    assert [len(r.results) for r in reports] == [2, 2, 2]
    assert all(len(c.samples) == 3 for r in reports for c in r.results)
    assert reports[0].load_times and reports[0].settings["resolutions"] == ["224x224", "1920x1080"]


def test_reports_are_grouped_by_chip_in_name_order(tmp_path):
    b = merge.load(_report(tmp_path / "b.json", "zz-chip", {"224x224": 10.0}))
    a1 = merge.load(_report(tmp_path / "a1.json", "aa-chip", {"224x224": 20.0}))
    a2 = merge.load(_report(tmp_path / "a2.json", "aa-chip", {"224x224": 30.0, "448x448": 5.0}))
    groups = merge.by_chip([b, a1, a2])
    assert list(groups) == ["aa-chip", "zz-chip"]
    assert [r.path.name for r in groups["aa-chip"]] == ["a1.json", "a2.json"]  # as given
    text = merge.markdown([b, a1, a2])
    assert text.startswith("# pytest-mlxvlm: 3 report(s) from 2 chip(s)")
    assert "| Model | Case | aa-chip | zz-chip |" in text
    assert "| m | `t[224x224]` | 20.0 / 30.0 | 10.0 |" in text  # one row, one cell per chip
    assert "| m | `t[448x448]` | 5.0 | - |" in text
    assert "AA-CHIP, metal, mlx ?, mlx-vlm ?" in text


def test_merged_document_keeps_every_report(tmp_path):
    reports = [merge.load(_report(tmp_path / f"{c}.json", c, {"224x224": 10.0})) for c in "ab"]
    doc = merge.merged_document(reports)
    assert doc["schema"] == MERGED_SCHEMA and list(doc["chips"]) == ["a", "b"]
    (entry,) = doc["chips"]["a"]["reports"]
    assert entry["file"] == str(tmp_path / "a.json") and entry["machine"]["key"] == "a"
    assert entry["results"][0]["summary"]["end_to_end_tps"]["median"] == 10.0
    json.dumps(doc)


@pytest.mark.parametrize("content, problem", [
    ("{not json", "cannot read"),
    (json.dumps({"results": []}), "is not a pytest-mlxvlm --mlx-json report"),
    (json.dumps({"schema_version": 2, "machine": {"key": "k"}, "results": []}),
     "is not a pytest-mlxvlm --mlx-json report"),
    (json.dumps({"schema_version": 1, "results": []}), "missing field 'machine'"),
    (json.dumps({"schema_version": 1, "machine": {}, "results": []}), "missing field 'key'"),
])
def test_a_report_that_cannot_be_merged_is_named(tmp_path, content, problem):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(merge.MergeError, match=problem) as exc:
        merge.load(path)
    assert str(path) in str(exc.value)


def test_merge_groups_reports_of_several_machines_by_chip(fake, tmp_path):
    """Real reports: H200 sweeps and a session of the fake engine, merged by the command."""
    fake.runpytest("--mlx-model", "fake:a", "--quick", "--mlx-rounds", "2", "-p", "no:benchmark",
                   "--mlx-chip", "ci-runner", "--mlx-json", "cpu.json").assert_outcomes(passed=4)
    out, merged = tmp_path / "merged.md", tmp_path / "merged.json"
    run = subprocess.run([sys.executable, "-m", "pytest_mlxvlm", "merge", *map(str, SWEEPS),
                          str(fake.path / "cpu.json"), "--out", str(out), "--json", str(merged)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"merged report written to {out}" in run.stdout
    text = out.read_text()
    assert text.startswith("# pytest-mlxvlm: 4 report(s) from 2 chip(s)")
    assert "| Model | Case | ci-runner | nvidia-h200 |" in text
    # a case measured on both chips sits on one row, a chip without it shows "-"
    assert "| fake:a | `test_image_generation[224x224]` | 88.8 | - |" in text
    assert text.index("## ci-runner") < text.index("## nvidia-h200")
    assert "### synthetic:qwen3-vl-8b-4bit (`sweep-qwen3-vl-8b-4bit.json`)" in text
    assert "| 1920x1080 " in text and "Aggregate: 2 configs" in text
    doc = json.loads(merged.read_text())
    assert sorted(doc["chips"]) == ["ci-runner", "nvidia-h200"]
    assert len(doc["chips"]["nvidia-h200"]["reports"]) == 3
    assert {r["machine"]["key"] for c in doc["chips"].values() for r in c["reports"]} == set(doc["chips"])


def test_merge_to_stdout(tmp_path, capsys):
    assert main(["merge", str(_report(tmp_path / "a.json", "a", {"224x224": 10.0}))]) == 0
    assert capsys.readouterr().out.startswith("# pytest-mlxvlm: 1 report(s) from 1 chip(s)")


def test_merge_bad_input_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["merge", str(bad)]) == 2
    assert f"cannot merge: cannot read {bad}" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"results": []}))
    assert main(["merge", str(other)]) == 2
    assert "is not a pytest-mlxvlm --mlx-json report" in capsys.readouterr().err
