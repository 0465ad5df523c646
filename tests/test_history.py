"""The history store: one line per session, concurrent appends, corrupt lines skipped."""

import json
import multiprocessing
import sys
from pathlib import Path

import pytest

from pytest_mlxvlm.common import machine
from pytest_mlxvlm.reports import history


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
    assert read.problems == [f"{path}:2: not JSON (Expecting property name enclosed in double quotes at "
                             "column 2); skipped",
                             f"{path}:3: unknown schema_version 7; skipped"]
    assert path.read_text() == before


def test_a_bad_line_is_placed_by_its_column(tmp_path: Path):
    path = tmp_path / "h.jsonl"
    path.write_text('{"schema_version": 1, "note": "a\tb"}\n')  # a raw tab inside a string
    assert history.read(path).problems == [f"{path}:1: not JSON (Invalid control character at column 33); skipped"]


def _append(args):
    path, i = args
    history.append(Path(path), {"schema_version": 1, "machine": {}, "cases": [], "i": i})


def test_concurrent_appends(tmp_path: Path):
    path = tmp_path / "h.jsonl"
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        pool.map(_append, [(str(path), i) for i in range(24)])
    read = history.read(path)
    assert sorted(r["i"] for r in read.records) == list(range(24)) and read.problems == []


@pytest.mark.parametrize("version", [True, 1.0, "1"])
def test_a_schema_version_is_the_integer_only(tmp_path: Path, version):
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps({"schema_version": version, "machine": {}, "cases": []}) + "\n")
    read = history.read(path)
    assert read.records == [] and read.problems == [f"{path}:1: unknown schema_version {version!r}; skipped"]


def test_a_json_report_is_not_read_as_a_history(tmp_path: Path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schema_version": 1, "results": [{"samples": []}] * 50}, indent=2))
    with pytest.raises(history.StoreError, match=r"r\.json is one JSON document \(a --mlx-json report\?\), "
                                                 "not a history: give the file --mlx-history writes"):
        history.read(path)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file size limit")
def test_a_full_disk_leaves_no_cut_line_in_the_history(fake: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """The disk fills up 100 bytes into the session's line: the process's file size limit
    (RLIMIT_FSIZE, SIGXFSZ ignored) makes the kernel cut the write, as a full disk does."""
    import resource
    import signal

    from pytest_mlxvlm.reports import store

    path = fake.path / "history.jsonl"
    for i in range(2):
        history.append(path, {"schema_version": 1, "machine": {}, "cases": [], "i": i})
    before = path.read_bytes()
    append = store.JSONLinesStore.append

    def append_on_a_full_disk(self: store.JSONLinesStore, record: dict) -> None:
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.path.stat().st_size + 100, hard))
        try:
            append(self, record)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, handler)

    monkeypatch.setattr(store.JSONLinesStore, "append", append_on_a_full_disk)
    result = fake.runpytest("--mlx-model", "fake:a", "--mlx-resolutions", "224x224", "--mlx-rounds", "2",
                            "--mlx-history", str(path), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"mlxvlm: history not written to {path}: OSError: [[]Errno 27[]] File too large"])
    assert path.read_bytes() == before
    assert history.read(path).problems == []


def test_the_session_records_its_repository_without_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """For the report's commit links: GitHub's variables first, else the origin remote made
    browsable, a token in it dropped; a repository without a remote records none."""
    import subprocess

    from pytest_mlxvlm.reports.history import git_state

    for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_SHA", "GITHUB_REF_NAME"):
        monkeypatch.delenv(name, raising=False)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert git_state(tmp_path)["repository"] is None
    subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "origin",
                    "https://x-access-token:SECRET@github.com/org/app.git"], check=True)
    assert git_state(tmp_path)["repository"] == "https://github.com/org/app"
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.example")
    monkeypatch.setenv("GITHUB_REPOSITORY", "org/other")
    assert git_state(tmp_path)["repository"] == "https://github.example/org/other"
