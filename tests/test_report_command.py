"""``pytest-mlxvlm report``: the command around the dashboard (cli/report.py)."""

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from pytest_mlxvlm.cli.main import main

DATA = Path(__file__).parent / "data"


def _records(values, chip="k"):
    return [{"schema_version": 1, "date": (datetime(2026, 11, 1) + timedelta(days=i)).isoformat(),
             "commit": f"c{i:02d}", "machine": {"key": chip},
             "cases": [{"model": "m", "case_key": "t[224x224]", "resolution": "224x224",
                        "medians": {"end_to_end_tps": v, "generation_tps": v * 1.2, "ttft_s": 0.1}}]}
            for i, v in enumerate(values)]


def test_report_command(tmp_path, capsys):
    path = tmp_path / "h.jsonl"
    values = [100, 101, 99, 100, 102, 98, 70, 71, 69, 70, 72, 70]
    path.write_text("".join(json.dumps(r) + "\n" for r in _records(values)) + "{corrupt\n")
    assert main(["report", str(path), "--out", str(tmp_path / "out"), "--no-png"]) == 1
    captured = capsys.readouterr()
    (problem,) = captured.err.splitlines()  # the bad line, and no progress off a terminal
    assert problem.startswith(f"pytest-mlxvlm: {path}:13: not JSON (") and problem.endswith("); skipped")
    assert "new regression: k m t[224x224] Speed: -30.0% between commits c05 and c06" in captured.out
    assert captured.out.startswith(f"report written to {tmp_path / 'out' / 'index.html'} (3 series, ")
    assert "REGRESSION -30.0% between c05 and c06" in (tmp_path / "out" / "report.md").read_text()


def test_progress_on_request(tmp_path, capsys):
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records([100] * 8)))
    assert main(["report", str(path), "--out", str(tmp_path / "out"), "--no-png", "--progress"]) == 0
    stages = [line.split(":")[1].split()[0] for line in capsys.readouterr().err.splitlines()]
    assert stages[0] == "read" and stages[-1] == "pages" and "change" in stages


def test_report_and_compare_as_commands(tmp_path):
    """The installed command, in its own process, on a history of real sessions (12 sessions of
    synthetic:tiny on a CPU, a slowdown injected from c08 on; samples kept for c07 and c08)."""
    history = DATA / "history-demo.jsonl"
    run = subprocess.run([sys.executable, "-m", "pytest_mlxvlm", "report", str(history),
                          "--out", str(tmp_path / "r"), "--no-png"], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr  # the injected slowdown is the newest change point
    regressions = [line for line in run.stdout.splitlines() if line.startswith("new regression:")]
    assert len(regressions) == 4 and all("between commits c07 and c08" in line for line in regressions)
    records = [json.loads(line) for line in history.read_text().splitlines()]
    for name, rec in (("before.json", records[6]), ("after.json", records[7])):
        doc = {"machine": rec["machine"], "results": [  # history samples: metric -> values
            {**case, "samples": [dict(zip(case["samples"], values))
                                 for values in zip(*case["samples"].values())]}
            for case in rec["cases"]]}
        (tmp_path / name).write_text(json.dumps(doc))
    cmp = subprocess.run([sys.executable, "-m", "pytest_mlxvlm", "compare", str(tmp_path / "before.json"),
                          str(tmp_path / "after.json")], capture_output=True, text=True)
    assert cmp.returncode == 1 and "regressed" in cmp.stdout, cmp.stderr


def test_help_documents_every_argument(capsys):
    import pytest

    for command in ("report", "bisect"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        options = {o for o in text.split() if o.startswith("--")}
        assert options and "--help" in options
        for line in text.splitlines():  # every argument has a line of help after its name
            stripped = line.strip()
            if stripped.startswith("--") and "  " not in stripped and len(stripped.split()) <= 2:
                following = text.splitlines()[text.splitlines().index(line) + 1].strip()
                assert following and not following.startswith("--"), line


def test_a_repo_url_that_is_no_web_address_is_refused(tmp_path, capsys):
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records([100] * 6)))
    assert main(["report", str(path), "--out", str(tmp_path / "out"), "--repo-url", "not a url"]) == 2
    assert capsys.readouterr().err.startswith("pytest-mlxvlm: --repo-url 'not a url': not a web address; give "
                                              "https://github.com/OWNER/REPO or a template with {commit}")
    assert not (tmp_path / "out").exists()
