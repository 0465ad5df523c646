"""The history store: one line per session, concurrent appends, corrupt lines skipped."""

import json
import multiprocessing
from pathlib import Path

import pytest

from pytest_mlxvlm import history, machine


def test_sessions_append_lines(fake: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GITHUB_SHA", "abc123")
    monkeypatch.setenv("GITHUB_REF_NAME", "main")
    args = ["--mlx-model", "fake:a", "--mlx-resolutions", "224x224,448x448", "--mlx-rounds", "3",
            "--mlx-history", "hist/history.jsonl", "-p", "no:benchmark"]
    fake.runpytest(*args).assert_outcomes(passed=2)
    fake.runpytest(*args).assert_outcomes(passed=2)
    read = history.read(fake.path / "hist" / "history.jsonl")
    assert read.problems == [] and len(read.records) == 2
    rec = read.records[0]
    assert (rec["commit"], rec["branch"]) == ("abc123", "main")
    assert rec["machine"] == machine.identity() and rec["settings"]["max_tokens"] == 64
    assert [c["resolution"] for c in rec["cases"]] == ["224x224", "448x448"]
    assert len(rec["cases"][0]["samples"]["end_to_end_tps"]) == 3
    assert rec["cases"][0]["medians"]["image_tokens"] == 64


def test_corrupt_lines_are_reported_and_skipped(tmp_path: Path):
    path = tmp_path / "h.jsonl"
    good = {"schema_version": 1, "machine": {}, "cases": []}
    path.write_text(json.dumps(good) + "\n{broken\n" + json.dumps({**good, "schema_version": 7})
                    + "\n" + json.dumps(good) + "\n")
    before = path.read_text()
    read = history.read(path)
    assert len(read.records) == 2
    assert read.problems == [f"{path}:2: not JSON (Expecting property name enclosed in double quotes); skipped",
                             f"{path}:3: unknown schema_version 7; skipped"]
    assert path.read_text() == before


def _append(args):
    path, i = args
    history.append(Path(path), {"schema_version": 1, "machine": {}, "cases": [], "i": i})


def test_concurrent_appends(tmp_path: Path):
    path = tmp_path / "h.jsonl"
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        pool.map(_append, [(str(path), i) for i in range(24)])
    read = history.read(path)
    assert sorted(r["i"] for r in read.records) == list(range(24)) and read.problems == []
