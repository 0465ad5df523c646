"""The pytest-mlxvlm command: importing published results as reference baselines, comparing two
reports. (``merge`` is tested in test_merge.py, ``report`` in test_report_command.py, ``bisect`` in
test_bisect.py.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mlxvlm.cli.main import main
from pytest_mlxvlm.gate import baselines

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


def test_an_import_writes_every_file_or_none(tmp_path, capsys):
    doc = json.loads(SHARED.read_text())
    assert main(["import-reference", str(SHARED), "--baseline-dir", str(tmp_path / "a")]) == 0
    made = sorted((tmp_path / "a").rglob("*.json"))  # all there but one: none is written, not even that one
    made[-1].unlink()
    assert main(["import-reference", str(SHARED), "--baseline-dir", str(tmp_path / "a")]) == 2
    assert f"exists (and {len(made) - 2} more); pass --force to replace it; nothing was written" in capsys.readouterr().err
    assert not made[-1].exists()
    twice = {**doc, "runs": doc["runs"] + doc["runs"][:1]}  # a run given twice: both would be one file
    (tmp_path / "twice.json").write_text(json.dumps(twice))
    assert main(["import-reference", str(tmp_path / "twice.json"), "--baseline-dir", str(tmp_path / "b")]) == 2
    assert "(the same chip and model)" in capsys.readouterr().err and not (tmp_path / "b").exists()


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


def _report(tmp_path, name, speed, chip="k", image_tokens=64, rounds=5):
    samples = [{"time_s": 1.0, "ttft_s": 0.1, "preprocess_s": 0.01, "prefill_s": 0.09,
                "prompt_tokens": 90, "cached_tokens": 0, "image_tokens": image_tokens,
                "generation_tokens": 64, "prompt_tps": 1000.0, "generation_tps": speed * 1.2,
                "end_to_end_tps": speed * (1 + i / 100), "peak_memory": 1.0} for i in range(rounds)]
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
    assert "| m | `t[224x224]` | Speed | 102 | 71.4 | -30.0% | 10% | regressed (p=0.004) |" in out
    assert main(["compare", a, _report(tmp_path, "d.json", 100.0, image_tokens=80)]) == 1
    assert "changed: image_tokens: 64 -> 80" in capsys.readouterr().out
    assert main(["compare", a, _report(tmp_path, "e.json", 50.0, chip="other")]) == 2
    assert "results of different chips are not compared" in capsys.readouterr().err
    empty = tmp_path / "empty.json"  # every case failed: nothing was measured
    empty.write_text(json.dumps({"machine": {"key": "k"}, "results": []}))
    assert main(["compare", a, str(empty)]) == 2
    assert "have no case in common (1 and 0 cases): nothing to compare" in capsys.readouterr().err
    two = json.loads(Path(a).read_text())
    two["results"].append({**two["results"][0], "case_key": "t[448x448]", "resolution": "448x448"})
    Path(tmp_path / "two.json").write_text(json.dumps(two))
    assert main(["compare", str(tmp_path / "two.json"), a]) == 0
    assert "1 case(s) of " in capsys.readouterr().err


# -- report on a history it cannot use ------------------------------------------------------------

def test_report_on_an_empty_history_says_so_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "h.jsonl").write_text("")
    assert main(["report", str(tmp_path / "h.jsonl"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"pytest-mlxvlm: no usable session in {tmp_path / 'h.jsonl'}: nothing to report, nothing written\n"
    assert not (tmp_path / "out").exists()


def test_report_on_a_history_of_bad_lines_counts_them(tmp_path, capsys):
    (tmp_path / "h.jsonl").write_text("{broken\n" * 25)
    assert main(["report", str(tmp_path / "h.jsonl"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 12 and err[10] == "pytest-mlxvlm: ... and 15 more line(s) skipped"
    assert err[11].endswith("h.jsonl (25 line(s) skipped): nothing to report, nothing written")


def test_report_given_a_json_report_says_what_it_wants(tmp_path, capsys):
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"schema_version": 1, "machine": {"key": "k"},
                                  "results": [{"samples": [{"ttft_s": 0.1}] * 20}] * 10}, indent=2))
    assert main(["report", str(report), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == (f"pytest-mlxvlm: {report} is one JSON document (a --mlx-json report?), not a history: "
                   "give the file --mlx-history writes, one JSON line per session\n")
    assert main(["history", "import", str(report), f"sqlite:///{tmp_path / 'h.db'}"]) == 2
    assert "is one JSON document" in capsys.readouterr().err and not (tmp_path / "h.db").exists()


def test_compare_says_undecidable_instead_of_ok(tmp_path, capsys):
    """3 rounds against 3 can never reach p < 0.05: a 25% slowdown is undecidable, exit 2, not ok."""
    a = _report(tmp_path, "a.json", 100.0, rounds=3)
    assert main(["compare", a, _report(tmp_path, "b.json", 75.0, rounds=3)]) == 2
    captured = capsys.readouterr()
    assert ("| m | `t[224x224]` | Speed | 101 | 75.75 | -25.0% | none | undecidable at n=3 vs 3 "
            "(smallest detectable: none; p < 0.05 needs 4 samples each) |") in captured.out
    assert " ok " not in captured.out and "0 regressed, 4 undecidable" in captured.out
    assert "cannot decide 4 comparison(s)" in captured.err and "at least 4 rounds" in captured.err
    # a looser alpha decides it: 3 vs 3 reaches p = 0.05 < 0.1
    assert main(["compare", a, _report(tmp_path, "c.json", 75.0, rounds=3), "--alpha", "0.1"]) == 1
    # metrics named as the tables name them
    assert main(["compare", a, _report(tmp_path, "d.json", 75.0, rounds=3), "--alpha", "0.1",
                 "--tolerance", "speed=30", "--tolerance", "Decode=30"]) == 0


def _subcommands(parser, prefix=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subcommands(sub, (*prefix, name))


def test_every_subcommand_argument_is_documented(monkeypatch):
    """``pytest-mlxvlm CMD --help`` describes every argument."""
    import argparse
    import importlib

    cli = importlib.import_module("pytest_mlxvlm.cli.main")
    built = []

    def keep(self, *args, **kwargs):
        built.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(cli._Parser, "parse_args", keep)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    commands = dict(_subcommands(built[0]))
    assert {("compare",), ("merge",), ("history", "import"), ("import-reference",), ("report",),
            ("bisect",)} <= set(commands)
    for name, sub in commands.items():
        assert sub.description, name
        for action in sub._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                assert action.help, f"pytest-mlxvlm {' '.join(name)}: {action.dest} has no help"
