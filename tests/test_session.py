"""The session: its baseline store, and how it ends (baselines, Markdown, history, JSON), each
output on its own, when one cannot be written, after Ctrl-C, and on a Mac with another mlx."""

import dataclasses
import json
import os
from pathlib import Path

import pytest

from pytest_mlxvlm.cli.main import main
from pytest_mlxvlm.config.settings import ABPlan, Outputs, Settings
from pytest_mlxvlm.gate import baselines
from pytest_mlxvlm.gate.abmode import ABModel
from pytest_mlxvlm.harness.session import BaselineStore, BenchSession
from pytest_mlxvlm.measure.isolation import IsolatedModel
from pytest_mlxvlm.models.loading import LoadedModel
from pytest_mlxvlm.reports import history
from pytest_mlxvlm.results import CaseResult, Sample

RUN = ["--mlx-model", "fake:a", "--mlx-chip", "test-chip", "--mlx-rounds", "3", "-p", "no:benchmark",
       "--mlx-resolutions", "224x224,448x448"]


def _result(key: str, outcome: str = "passed", speed: float = 10.0) -> CaseResult:
    sample = Sample(1.0, 0.1, 0.01, 0.09, 90, 0, 64, 10, 1000.0, speed * 1.2, speed, 0.5)
    return CaseResult(model="org/m", resolution="224x224", samples=[sample] * 3, outcome=outcome,
                      case_key=key, test_id=f"t.py::test_x[{key}]", workload={"max_tokens": 10})


# -- the baseline store ------------------------------------------------------------------------

def test_store_paths_are_per_chip_and_model(tmp_path):
    store = BaselineStore(tmp_path, "apple-m4-max-128gb")
    assert store.path("mlx-community/Qwen3-VL-8B-Instruct-4bit") == (
        tmp_path / "apple-m4-max-128gb" / "mlx-community--Qwen3-VL-8B-Instruct-4bit.json")
    assert store.path("synthetic:tiny").name == "synthetic-tiny.json"


def test_store_writes_passed_cases_and_reads_them_back(tmp_path):
    store = BaselineStore(tmp_path, "chip")
    keys = store.write("org/m", [_result("a"), _result("b", "failed"), _result("c")],
                       machine={"key": "chip"}, libraries={"mlx": "9.9"}, mode="all")
    assert keys == ["a", "c"]
    stored = BaselineStore(tmp_path, "chip").get("org/m")  # a new session reads the file
    assert stored.path == store.path("org/m") and stored.kind == "measured"
    assert sorted(stored.cases) == ["a", "c"] and stored.machine == {"key": "chip"}
    assert stored.cases["a"].libraries == {"mlx": "9.9"}
    assert store.write("org/m", [_result("a"), _result("d")], machine={}, libraries={},
                       mode="new") == ["d"]


def test_store_reads_once_per_session(tmp_path):
    store = BaselineStore(tmp_path, "chip")
    assert store.get("org/m") is None
    BaselineStore(tmp_path, "chip").write("org/m", [_result("a")], machine={}, libraries={}, mode="all")
    assert store.get("org/m") is None  # what this session saw at first
    assert BaselineStore(tmp_path, "chip").get("org/m") is not None


def test_store_uses_a_reference_only_without_a_measured_file(tmp_path):
    ref = baselines.BaselineFile(
        path=baselines.reference_path(tmp_path, "chip", "org--m"), model="org/m", chip="chip",
        kind="reference", reference={"tolerance": 0.3},
        cases={"a": baselines.BaselineCase("t", "224x224", {"end_to_end_tps": [[50.0]]})})
    ref.path.parent.mkdir(parents=True)
    ref.path.write_text(ref.to_json())
    assert BaselineStore(tmp_path, "chip").get("org/m").kind == "reference"
    BaselineStore(tmp_path, "chip").write("org/m", [_result("a")], machine={}, libraries={}, mode="all")
    assert BaselineStore(tmp_path, "chip").get("org/m").kind == "measured"
    assert ref.path.read_text() == ref.to_json()


def test_store_raises_for_a_corrupt_file_every_time(tmp_path):
    store = BaselineStore(tmp_path, "chip")
    store.path("org/m").parent.mkdir(parents=True)
    store.path("org/m").write_text('{"schema_version": 1, "model": "org/m", "chip": "other", "cases": {}}')
    for _ in range(2):
        with pytest.raises(baselines.BaselineError, match="it is for chip 'other', not 'chip'"):
            store.get("org/m")


# -- the bandwidth bound of a model in a worker -------------------------------------------------

def _bound(weights: int, kv: int, gbps: float = 100.0) -> float:
    """limit_tps of ``_result``'s case: 90 prompt tokens, 10 generated (mean context 95)."""
    return gbps * 1e9 / (weights + kv * 95)


def test_an_isolated_model_bounds_decode_with_the_bytes_its_worker_reported():
    session = BenchSession(config=None, settings=Settings(outputs=Outputs(bandwidth=100.0)))
    isolated = IsolatedModel("org/m", decode_bytes=(10**9, 1000))
    loaded = LoadedModel(spec="org/m", path=None, model=None, processor=None, isolated=isolated)
    limit = session.decode_limit(loaded, _result("a"))
    assert limit["gbps"] == 100.0 and limit["bytes_per_token"] == 10**9 + 1000 * 95
    assert limit["limit_tps"] == pytest.approx(_bound(10**9, 1000))
    assert limit["fraction"] == pytest.approx(12.0 / _bound(10**9, 1000))  # Decode: 1.2 x speed
    isolated.decode_bytes = (10**9, None)  # a worker that could not tell: no bound, no error
    assert session.decode_limit(loaded, _result("a")) is None


def test_each_side_of_an_ab_run_is_bounded_by_its_own_workers_bytes():
    session = BenchSession(config=None, settings=Settings(outputs=Outputs(bandwidth=100.0)))
    ab = ABModel("org/m", None, None, ABPlan(), Path("."),  # type: ignore[arg-type]
                 decode_bytes={"base": (2 * 10**9, 1000), "head": (10**9, 1000)})
    loaded = LoadedModel(spec="org/m", path=None, model=None, processor=None, ab=ab)
    for side, weights in (("base", 2 * 10**9), ("head", 10**9)):
        result = dataclasses.replace(_result("a"), side=side)
        assert session.decode_limit(loaded, result)["limit_tps"] == pytest.approx(_bound(weights, 1000))
    ab.decode_bytes["head"] = (None, None)
    assert session.decode_limit(loaded, dataclasses.replace(_result("a"), side="head")) is None


def test_no_bound_without_a_bandwidth_or_a_model():
    loaded = LoadedModel(spec="org/m", path=None, model=None, processor=None)  # a fake engine's
    session = BenchSession(config=None, settings=Settings(outputs=Outputs(bandwidth=100.0)))
    assert session.decode_limit(loaded, _result("a")) is None


# -- how a session ends ------------------------------------------------------------------------

def _failed_lines(result: pytest.RunResult) -> list[str]:
    return [line for line in result.stdout.lines if " not written " in line]


def test_a_json_path_that_is_a_directory_loses_no_other_output(fake):
    (fake.path / "out.json").mkdir()
    result = fake.runpytest(*RUN, "--mlx-json", "out.json", "--mlx-history", "h.jsonl",
                            "--mlx-markdown", "pr.md", "--mlx-update-baselines")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    (line,) = _failed_lines(result)
    assert line.startswith("mlxvlm: JSON report not written to ") and str(fake.path / "out.json") in line
    assert "IsADirectoryError" in line
    assert (fake.path / "out.json").is_dir() and not any((fake.path / "out.json").iterdir())
    assert len(history.read(fake.path / "h.jsonl").records) == 1
    assert "test_image_generation[448x448]" in (fake.path / "pr.md").read_text()
    assert (fake.path / "baselines" / "test-chip" / "fake-a.json").is_file()
    result.stdout.fnmatch_lines(["*mlxvlm: Markdown report written to *pr.md*",
                                 "*mlxvlm: history session appended to *h.jsonl*"], consecutive=False)
    assert not [p for p in fake.path.rglob("*") if p.suffix in (".lock", ".tmp")]


def test_a_baseline_dir_that_is_a_file_loses_no_other_output(fake):
    (fake.path / "not-a-dir").write_text("x")
    result = fake.runpytest(*RUN, "--mlx-baseline-dir", "not-a-dir", "--mlx-update-baselines",
                            "--mlx-json", "out.json", "--mlx-history", "h", "--mlx-markdown", "pr.md")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["baselines not updated: *not-a-dir*"])
    assert json.loads((fake.path / "out.json").read_text())["results"]
    assert (fake.path / "pr.md").is_file() and len(history.read(fake.path / "h").records) == 1
    assert (fake.path / "not-a-dir").read_text() == "x"


def test_a_history_path_that_is_a_directory_is_named_alone(fake):
    (fake.path / "hist").mkdir()
    result = fake.runpytest(*RUN, "--mlx-history", "hist", "--mlx-json", "out.json")
    result.assert_outcomes(passed=2)
    (line,) = _failed_lines(result)
    assert line.startswith("mlxvlm: history not written to ") and "hist" in line
    assert json.loads((fake.path / "out.json").read_text())["results"]


def test_a_markdown_path_under_a_regular_file_loses_no_other_output(fake):
    (fake.path / "notes").write_text("a file, not a folder")
    result = fake.runpytest(*RUN, "--mlx-markdown", "notes/pr.md", "--mlx-json", "good/out.json",
                            "--mlx-history", "h.jsonl")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    (line,) = _failed_lines(result)
    assert line.startswith(f"mlxvlm: Markdown report not written to {fake.path / 'notes' / 'pr.md'}: ")
    assert (fake.path / "notes").read_text() == "a file, not a folder"
    assert len(json.loads((fake.path / "good" / "out.json").read_text())["results"]) == 2
    assert len(history.read(fake.path / "h.jsonl").records) == 1


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders: see the test above (a parent that is a file)")
def test_a_markdown_path_in_a_read_only_folder_loses_no_other_output(fake):
    folder = fake.path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = fake.runpytest(*RUN, "--mlx-markdown", "ro/pr.md", "--mlx-json", "out.json")
    finally:
        folder.chmod(0o755)
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    (line,) = _failed_lines(result)
    assert line.startswith("mlxvlm: Markdown report not written to ") and "PermissionError" in line
    assert not (folder / "pr.md").exists() and (fake.path / "out.json").is_file()


def test_a_step_summary_that_cannot_be_appended_is_named_alone(fake, monkeypatch):
    summary = fake.path / "summary"
    summary.mkdir()  # e.g. a misconfigured runner
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = fake.runpytest(*RUN, "--mlx-markdown", "pr.md")
    result.assert_outcomes(passed=2)
    assert (fake.path / "pr.md").is_file() and result.ret == pytest.ExitCode.OK
    (line,) = _failed_lines(result)
    assert str(summary) in line and "pr.md" not in line
    result.stdout.fnmatch_lines(["*mlxvlm: Markdown report written to *pr.md*"])


def test_an_output_that_cannot_be_written_keeps_the_tests_exit_code(fake):
    fake.makepyfile(test_broken="def test_broken():\n    assert False\n")
    (fake.path / "out.json").mkdir()
    result = fake.runpytest(*RUN, "--mlx-suite", "images", "--mlx-json", "out.json")
    result.assert_outcomes(passed=2, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert len(_failed_lines(result)) == 1


def test_a_cut_history_line_is_kept_apart_and_reported_alone(fake, capsys):
    path = fake.path / "h.jsonl"
    args = [*RUN, "--mlx-history", "h.jsonl"]
    fake.runpytest(*args).assert_outcomes(passed=2)
    first = path.read_text()
    path.write_text(first + first[:40])  # a session killed while appending its line
    fake.runpytest(*args).assert_outcomes(passed=2)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and lines[0] == first.rstrip("\n") and lines[1] == first[:40]
    assert json.loads(lines[2])["cases"]  # the next session starts on a line of its own
    read = history.read(path)
    assert len(read.records) == 2 and read.problems == [f"{path}:2: not JSON " + read.problems[0].split(
        " not JSON ", 1)[1]]
    capsys.readouterr()
    assert main(["report", str(path), "--out", str(fake.path / "r")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"pytest-mlxvlm: {path}:2: not JSON")


INTERRUPTED = """
def test_measured(mlx_bench):
    mlx_bench.run()

def test_stopped():
    raise KeyboardInterrupt
"""


def test_an_interrupted_run_does_not_replace_a_complete_report(fake):
    outputs = ["--mlx-json", "out.json", "--mlx-markdown", "pr.md", "--mlx-history", "h.jsonl",
               "--mlx-bmf", "bmf.json", "--mlx-github-benchmark", "gab"]
    fake.runpytest(*RUN, *outputs).assert_outcomes(passed=2)
    trackers = sorted(str(p.relative_to(fake.path)) for p in (fake.path / "gab").rglob("*") if p.is_file())
    assert trackers
    complete = {name: (fake.path / name).read_text()
                for name in ("out.json", "pr.md", "h.jsonl", "bmf.json", *trackers)}
    fake.makepyfile(test_user=INTERRUPTED)
    args = ["--mlx-model", "fake:a", "--mlx-chip", "test-chip", "--mlx-rounds", "2",
            "-p", "no:benchmark", "--mlx-suite", "off", "--mlx-resolutions", "224x224", "test_user.py",
            *outputs]
    result = fake.runpytest(*args, no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert {name: (fake.path / name).read_text() for name in complete} == complete
    partial = json.loads((fake.path / "out.interrupted.json").read_text())
    assert partial["interrupted"] is True
    assert [r["test_id"].rpartition("::")[2] for r in partial["results"]] == ["test_measured[fake:a-224x224]"]
    assert (fake.path / "pr.interrupted.md").read_text().startswith("> ⚠️ interrupted")
    result.stdout.fnmatch_lines(["*mlxvlm: JSON report written to *out.interrupted.json*"], consecutive=False)
    # without an earlier report, the interrupted one takes the path, marked as such
    (fake.path / "out.json").unlink()
    fake.runpytest(*args, no_reraise_ctrlc=True)
    assert json.loads((fake.path / "out.json").read_text())["interrupted"] is True


def test_ctrl_c_while_the_baselines_are_written(fake, monkeypatch):
    """A real SIGINT to this process arrives while the baseline file is being written: that
    write is abandoned (the file stays as it was), the session ends as interrupted with one
    line and no traceback, the JSON report is still written (marked), no history line."""
    import signal
    import time

    from pytest_mlxvlm.gate import baselines as baseline_module

    fake.runpytest(*RUN, "--mlx-update-baselines").assert_outcomes(passed=2)
    stored = next((fake.path / "baselines").rglob("fake-a.json"))
    before = stored.read_bytes()
    real_write = baseline_module.atomic_write_text

    def write_interrupted(path, text):
        # Ctrl-C, now, to this thread: os.kill to the process may reach a thread that runs no
        # Python handler, or one that blocks SIGINT, and then arrive only after the write
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.raise_signal(signal.SIGINT)
        time.sleep(5)  # interrupted here
        real_write(path, text)

    monkeypatch.setattr(baseline_module, "atomic_write_text", write_interrupted)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own Ctrl-C
    try:
        result = fake.runpytest(*RUN, "--mlx-update-baselines=add", "--mlx-json", "out.json",
                                "--mlx-history", "h.jsonl")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["mlxvlm: baselines not written: interrupted (Ctrl-C); what was there "
                                 "before is left as it was",
                                 "*mlxvlm: JSON report written to *out.json*"])
    assert stored.read_bytes() == before and sorted(p.name for p in stored.parent.iterdir()) == ["fake-a.json"]
    assert json.loads((fake.path / "out.json").read_text())["interrupted"] is True
    assert not (fake.path / "h.jsonl").exists()


# -- on a Mac, with another mlx ------------------------------------------------------------------

MAC_HOOK = """
def pytest_mlxvlm_update_machine_info(config, machine):
    machine.update(backend="metal", chip="Apple M4 Max", memory_gb=128, key="apple-m4-max-128gb",
                   mlx="0.99.0")
    machine.pop("cores", None)
"""


@pytest.mark.parametrize("how", ["hook", "detect"])
def test_a_mac_records_and_gates_under_its_own_chip(fake, request, monkeypatch, how):
    if how == "hook":
        fake.makeconftest(fake.path.joinpath("conftest.py").read_text() + MAC_HOOK)
    else:
        request.getfixturevalue("simulated_mac")
    args = ["--mlx-model", "fake:a", "--mlx-rounds", "3", "-p", "no:benchmark",
            "--mlx-resolutions", "224x224,448x448"]
    result = fake.runpytest(*args, "--mlx-update-baselines", "--mlx-json", "out.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*mlxvlm: fake:a on Apple M4 Max (metal)*",
                                 "*2 baseline case(s) written to *baselines/apple-m4-max-128gb/fake-a.json*"],
                                consecutive=False)
    assert [p.relative_to(fake.path).as_posix() for p in (fake.path / "baselines").rglob("*")] == [
        "baselines/apple-m4-max-128gb", "baselines/apple-m4-max-128gb/fake-a.json"]
    stored = json.loads((fake.path / "baselines" / "apple-m4-max-128gb" / "fake-a.json").read_text())
    assert stored["chip"] == "apple-m4-max-128gb" and stored["machine"]["backend"] == "metal"
    assert {c["libraries"]["mlx"] for c in stored["cases"].values()} == {"0.99.0"}
    doc = json.loads((fake.path / "out.json").read_text())
    assert (doc["machine"]["key"], doc["machine"]["mlx"]) == ("apple-m4-max-128gb", "0.99.0")
    result = fake.runpytest(*args)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*mlxvlm baselines (apple-m4-max-128gb): 2 compared, 0 regressed*"])
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.3")
    fake.runpytest(*args, "--mlx-strict-baselines").assert_outcomes(failed=2)
