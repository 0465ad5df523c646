"""Change points and plots from a history (the `report` command)."""

import json

from pytest_mlxvlm.cli import main
from pytest_mlxvlm.trends import build_series, detect


def _records(values, chip="k"):
    return [{"schema_version": 1, "date": f"2026-11-{i + 1:02d}", "commit": f"c{i:02d}",
             "machine": {"key": chip},
             "cases": [{"model": "m", "case_key": "t[224x224]", "resolution": "224x224",
                        "medians": {"end_to_end_tps": v, "generation_tps": v * 1.2, "ttft_s": 0.1}}]}
            for i, v in enumerate(values)]


def test_a_step_is_found_at_the_right_commit():
    noise = [1.0, 1.02, 0.98, 1.01, 0.99, 1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01]
    values = [100 * n * (0.7 if i >= 6 else 1.0) for i, n in enumerate(noise)]
    (speed,) = [s for s in build_series(_records(values), ["end_to_end_tps"])]
    detect(speed, 0.10)
    assert [(cp.index, cp.commits, cp.regression) for cp in speed.change_points] == [
        (6, ("c05", "c06"), True)]
    assert abs(speed.change_points[0].change + 0.3) < 0.03


def test_flat_and_short_series():
    (flat,) = build_series(_records([100, 101, 99, 100, 102, 98, 100, 101]), ["end_to_end_tps"])
    detect(flat, 0.10)
    assert flat.change_points == []
    (short,) = build_series(_records([100, 70, 70]), ["end_to_end_tps"])
    detect(short, 0.10)
    assert short.change_points == [] and "too few" in short.note


def test_chips_are_never_mixed():
    series = build_series(_records([100] * 6, "a") + _records([50] * 6, "b"), ["end_to_end_tps"])
    assert sorted((s.chip, len(s.points)) for s in series) == [("a", 6), ("b", 6)]


def test_report_command(tmp_path, capsys):
    path = tmp_path / "h.jsonl"
    values = [100, 101, 99, 100, 102, 98, 70, 71, 69, 70, 72, 70]
    path.write_text("".join(json.dumps(r) + "\n" for r in _records(values)) + "{corrupt\n")
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "h.jsonl:13: not JSON" in captured.err
    assert "new regression: k m t[224x224] end_to_end_tps: -30.0% between commits c05 and c06" in captured.out
    assert (tmp_path / "out" / "plot-000.png").stat().st_size > 1000
    assert "REGRESSION -30.0% between c05 and c06" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "report.html").read_text().startswith("<!doctype html>")


def test_a_short_dip_of_the_machine_is_no_change_point():
    """Two slow sessions in the middle (a busy machine), then back: nothing to report."""
    values = [100, 101, 99, 100, 102, 70, 71, 100, 99, 101, 100, 102]
    (speed,) = build_series(_records(values), ["end_to_end_tps"])
    detect(speed, 0.10)
    assert speed.change_points == []


def test_a_dip_just_before_a_real_step_leaves_only_the_step():
    values = [100, 101, 99, 100, 101, 99, 100, 60, 61, 59, 60, 61, 60, 59]
    values[4:6] = [80, 81]  # two slow sessions before the real regression at index 7
    (speed,) = build_series(_records(values), ["end_to_end_tps"])
    detect(speed, 0.10)
    assert [(cp.index, cp.regression) for cp in speed.change_points] == [(7, True)]
    assert speed.change_points[0].p_value < 0.05


def test_report_and_compare_as_commands(tmp_path):
    """The installed command, in its own process, on a history of real sessions (12 sessions of
    synthetic:tiny on a CPU, a slowdown injected from c08 on; samples kept for c07 and c08)."""
    import subprocess
    import sys
    from pathlib import Path

    history = Path(__file__).parent / "data" / "history-demo.jsonl"
    run = subprocess.run([sys.executable, "-m", "pytest_mlxvlm", "report", str(history),
                          "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr  # the injected slowdown is the newest change point
    assert run.stdout.count("new regression:") == 4
    assert all("between commits c07 and c08" in line for line in run.stdout.splitlines()
               if line.startswith("new regression:"))
    assert (tmp_path / "r" / "plot-001.png").stat().st_size > 1000
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
