"""The pytest-mlxvlm command: importing published results as reference baselines."""

import json
import subprocess
import sys
from pathlib import Path

from pytest_mlxvlm import baselines
from pytest_mlxvlm.cli import main

# A copy of ../shared/reference/vllm-mlx-image-benchmarks.json, the published figures.
SHARED = Path(__file__).parents[1] / "docs" / "reference" / "vllm-mlx-image-benchmarks.json"
SHIPPED = Path(__file__).parents[1] / "baselines"


def test_shipped_references_match_the_published_figures(tmp_path):
    assert main(["import-reference", str(SHARED), "--baseline-dir", str(tmp_path)]) == 0
    for made in tmp_path.rglob("*.json"):
        shipped = SHIPPED / made.relative_to(tmp_path)
        assert shipped.read_text() == made.read_text(), f"{shipped} differs from the published file"
    m4 = baselines.read(tmp_path / "apple-m4-max-128gb" / "mlx-community--Qwen3-VL-8B-Instruct-4bit.reference.json")
    assert m4.kind == "reference" and len(m4.cases) == 10
    assert m4.cases["pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[1920x1080]"].metrics == {
        "end_to_end_tps": [14.1]}
    assert m4.reference["tolerance"] == 0.3 and "temperature 0.7" in m4.reference["method"]


def test_import_vllm_mlx_bench_output(tmp_path, capsys):
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({
        "type": "mllm_image", "model": "mlx-community/Qwen3-VL-4B-Instruct-3bit",
        "results": [{"resolution": "224x224", "width": 224, "height": 224, "pixels": 50176,
                     "time_seconds": 1.5, "tokens_generated": 90, "tokens_per_second": 60.0}],
    }))
    args = ["import-vllm-mlx", str(out), "--chip", "Apple M2 Ultra", "--memory-gb", "192",
            "--baseline-dir", str(tmp_path / "b")]
    assert main(args) == 0
    path = tmp_path / "b" / "apple-m2-ultra-192gb" / "mlx-community--Qwen3-VL-4B-Instruct-3bit.reference.json"
    stored = baselines.read(path)
    assert stored.cases["pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[224x224]"].metrics == {
        "end_to_end_tps": [60.0]}
    assert main(args) == 2  # never replaced without --force
    assert "exists; pass --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0


def test_bad_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "v.json"
    bad.write_text(json.dumps({"type": "video", "model": "m", "results": []}))
    assert main(["import-vllm-mlx", str(bad), "--chip", "Apple M1", "--memory-gb", "8",
                 "--baseline-dir", str(tmp_path)]) == 2
    assert "not an image benchmark" in capsys.readouterr().err


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "pytest_mlxvlm", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "import-reference" in out.stdout


def _report(tmp_path, name, speed, chip="k", image_tokens=64):
    samples = [{"time_s": 1.0, "ttft_s": 0.1, "preprocess_s": 0.01, "prefill_s": 0.09,
                "prompt_tokens": 90, "cached_tokens": 0, "image_tokens": image_tokens,
                "generation_tokens": 64, "prompt_tps": 1000.0, "generation_tps": speed * 1.2,
                "end_to_end_tps": speed * (1 + i / 100), "peak_memory": 1.0} for i in range(5)]
    doc = {"machine": {"key": chip}, "results": [
        {"model": "m", "case_key": "t[224x224]", "resolution": "224x224", "samples": samples}]}
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_compare_two_reports(tmp_path, capsys):
    a = _report(tmp_path, "a.json", 100.0)
    assert main(["compare", a, _report(tmp_path, "b.json", 99.0)]) == 0
    assert main(["compare", a, _report(tmp_path, "c.json", 70.0)]) == 1
    out = capsys.readouterr().out
    assert "| m | `t[224x224]` | Speed | 102 | 71.4 | -30.0% | regressed (p=0.004) |" in out
    assert main(["compare", a, _report(tmp_path, "d.json", 100.0, image_tokens=80)]) == 1
    assert "changed: image_tokens: 64 -> 80" in capsys.readouterr().out
    assert main(["compare", a, _report(tmp_path, "e.json", 50.0, chip="other")]) == 2
    assert "results of different chips are not compared" in capsys.readouterr().err


H200 = Path(__file__).parents[1] / "docs" / "results" / "h200"


def test_merge_groups_reports_of_several_machines_by_chip(pytester, tmp_path):
    """Real reports: the committed H200 sweeps and a CPU session of the fake engine, merged."""
    pytester.makeconftest("from pytest_mlxvlm.testing import FakeEngine\n\n"
                          "def pytest_configure(config):\n"
                          "    config.pluginmanager.register(FakeEngine(), 'fake-engine')\n")
    pytester.runpytest("--mlx-model", "fake:a", "--quick", "--mlx-rounds", "2", "-p", "no:benchmark",
                       "--mlx-chip", "ci-runner", "--mlx-json", "cpu.json").assert_outcomes(passed=4)
    sweeps = sorted(str(p) for p in H200.glob("sweep-*.json"))
    out, merged = tmp_path / "merged.md", tmp_path / "merged.json"
    run = subprocess.run([sys.executable, "-m", "pytest_mlxvlm", "merge", *sweeps,
                          str(pytester.path / "cpu.json"), "--out", str(out), "--json", str(merged)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert text.startswith("# pytest-mlxvlm: 4 report(s) from 2 chip(s)")
    assert "| Model | Case | ci-runner | nvidia-h200 |" in text
    # a case measured on both chips sits on one row, a chip without it shows "-"
    assert "| fake:a | `test_image_generation[224x224]` | 88.8 | - |" in text
    assert text.index("## ci-runner") < text.index("## nvidia-h200")
    assert "### synthetic:qwen3-vl-8b-4bit (`sweep-qwen3-vl-8b-4bit.json`)" in text
    assert "| 1920x1080 " in text and "Aggregate: 10 configs" in text
    doc = json.loads(merged.read_text())
    assert sorted(doc["chips"]) == ["ci-runner", "nvidia-h200"]
    assert len(doc["chips"]["nvidia-h200"]["reports"]) == 3
    assert {r["machine"]["key"] for c in doc["chips"].values() for r in c["reports"]} == set(doc["chips"])


def test_merge_bad_input_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["merge", str(bad)]) == 2
    assert f"cannot merge: cannot read {bad}" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"results": []}))
    assert main(["merge", str(other)]) == 2
    assert "is not a pytest-mlxvlm --mlx-json report" in capsys.readouterr().err
