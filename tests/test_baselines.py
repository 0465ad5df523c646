"""Baseline storage: the file format, reading and validating, updates in each mode, locking.

Unit tests of ``pytest_mlxvlm.gate.baselines`` and, through pytester sessions of the fake engine,
what a session writes and refuses to write.
"""

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mlxvlm.gate import baselines
from pytest_mlxvlm.results import BASELINE_SCHEMA, METRICS, CaseResult, Sample

pytestmark = pytest.mark.usefixtures("noisy_engine")

CHIP = "test-chip"
FILE = Path("baselines") / CHIP / "fake-a.json"
RUN = ["--mlx-model", "fake:a", "--mlx-chip", CHIP, "--mlx-rounds", "5", "-p", "no:benchmark",
       "--mlx-strict-baselines"]  # baselines recorded seconds ago gate too
TWO = ["--mlx-resolutions", "224x224,448x448"]
KEY = "pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[224x224]"


def _baseline(fake: pytest.Pytester, *extra: str) -> pytest.RunResult:
    result = fake.runpytest(*RUN, *TWO, "--mlx-update-baselines", *extra)
    result.assert_outcomes(passed=2)
    return result


def _case(samples: list[float], day: int = 1, **workload) -> baselines.BaselineCase:
    return baselines.BaselineCase("t", "224x224", {"end_to_end_tps": [samples]},
                                  libraries={"mlx": "1.0"}, workload=workload,
                                  recorded=[f"2026-11-{day:02d}T02:00:00+00:00"])


# -- the file format, unit by unit ---------------------------------------------------------------

def test_paths_of_measured_and_reference_files(tmp_path):
    assert baselines.baseline_path(tmp_path, "chip", "m") == tmp_path / "chip" / "m.json"
    assert baselines.reference_path(tmp_path, "chip", "m") == tmp_path / "chip" / "m.reference.json"


def test_written_file_reads_back_the_same(tmp_path):
    path = tmp_path / "chip" / "m.json"
    case = _case([10.0, 11.5, 9.25], prompt="p", max_tokens=8)
    assert baselines.update(path, model="m", chip="chip", machine={"key": "chip", "b": 1, "a": 2},
                            cases={"k": case}) == ["k"]
    doc = json.loads(path.read_text())
    assert list(doc) == ["schema_version", "kind", "model", "chip", "machine", "cases"]
    assert doc["schema_version"] == BASELINE_SCHEMA and doc["kind"] == "measured"
    assert list(doc["machine"]) == ["a", "b", "key"]  # stable key order: reviewable diffs
    assert doc["cases"]["k"]["metrics"]["end_to_end_tps"] == {"median": 10, "samples": [[10, 11.5, 9.25]]}
    stored = baselines.read(path, expect_chip="chip")
    assert stored.cases["k"] == case
    assert stored.to_json() == path.read_text()


def test_a_flat_sample_list_is_one_session(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"schema_version": 1, "model": "m", "chip": "c", "cases": {
        "k": {"metrics": {"end_to_end_tps": {"samples": [1, 2, 3]}}}}}))
    case = baselines.read(path).cases["k"]
    assert case.sessions == {"end_to_end_tps": [[1.0, 2.0, 3.0]]} and case.n_sessions == 1
    assert case.test == "k" and case.median("end_to_end_tps") == 2.0


@pytest.mark.parametrize("doc, problem", [
    ([], "the top level is not an object"),
    ({"schema_version": 1, "chip": "c", "cases": {}}, "missing 'model'"),
    ({"schema_version": 1, "model": "m", "chip": "c", "kind": "guess", "cases": {}}, "unknown kind 'guess'"),
    ({"schema_version": 1, "model": "m", "chip": "c", "cases": []}, "'cases' is not an object"),
    ({"schema_version": 1, "model": "m", "chip": "c", "cases": {"k": {}}}, "has no 'metrics' object"),
    ({"schema_version": 1, "model": "m", "chip": "c", "cases": {"k": {"metrics": {}}}}, "has no metrics"),
    ({"schema_version": 1, "model": "m", "chip": "c",
      "cases": {"k": {"metrics": {"speed": {"samples": [1]}}}}}, "unknown metric 'speed'"),
    ({"schema_version": 1, "model": "m", "chip": "c",
      "cases": {"k": {"metrics": {"ttft_s": {"samples": [[1], []]}}}}}, "an empty session"),
    ({"schema_version": 1, "model": "m", "chip": "c",
      "cases": {"k": {"metrics": {"ttft_s": {"samples": [True]}}}}}, "sample True is not a number"),
])
def test_read_names_the_file_and_the_problem(tmp_path, doc, problem):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(baselines.BaselineError) as exc:
        baselines.read(path)
    assert str(exc.value).startswith(f"corrupt baseline {path}: ") and problem in str(exc.value)
    assert "Nothing was overwritten" in str(exc.value)


def test_update_modes(tmp_path):
    path = tmp_path / "chip" / "m.json"

    def update(cases, mode):
        return baselines.update(path, model="m", chip="chip", machine={}, cases=cases, mode=mode)

    assert update({"a": _case([1.0]), "b": _case([2.0])}, "all") == ["a", "b"]
    assert update({"a": _case([5.0]), "c": _case([3.0])}, "new") == ["c"]
    assert baselines.read(path).cases["a"].sessions["end_to_end_tps"] == [[1.0]]
    assert update({"a": _case([4.0], day=2)}, "add") == ["a"]
    assert baselines.read(path).cases["a"].sessions["end_to_end_tps"] == [[1.0], [4.0]]
    # a session of other work replaces the case instead of joining it
    assert update({"a": _case([9.0], day=3, max_tokens=32)}, "add") == ["a"]
    assert baselines.read(path).cases["a"].sessions["end_to_end_tps"] == [[9.0]]
    before = path.read_text()
    assert update({"a": _case([1.0])}, "new") == []  # nothing to write: the file is untouched
    assert path.read_text() == before


def test_a_reference_file_is_never_overwritten_by_measurements(tmp_path):
    path = tmp_path / "chip" / "m.json"
    ref = baselines.BaselineFile(path=path, model="m", chip="chip", kind="reference",
                                 reference={"tolerance": 0.3}, cases={"k": _case([10.0])})
    path.parent.mkdir()
    path.write_text(ref.to_json())
    with pytest.raises(baselines.BaselineError, match="holds reference results"):
        baselines.update(path, model="m", chip="chip", machine={}, cases={"k": _case([1.0])})
    assert path.read_text() == ref.to_json()


def test_case_from_a_result_keeps_every_metric_and_the_workload():
    sample = Sample(1.0, 0.1, 0.01, 0.09, 90, 0, 64, 10, 1000.0, 100.0, 10.0, 0.5)
    result = CaseResult(model="m", resolution="224x224", samples=[sample, sample],
                        workload={"max_tokens": 10}, test_id="t.py::test_x[m-224x224]")
    case = baselines.case_from_result(result, {"mlx": "1.0"})
    assert case.test == "test_x" and case.resolution == "224x224"
    assert set(case.sessions) == set(METRICS) and case.sessions["time_s"] == [[1.0, 1.0]]
    assert case.workload == {"max_tokens": 10} and case.libraries == {"mlx": "1.0"}
    assert len(case.recorded) == 1 and case.recorded[0].endswith("+00:00")


def test_session_dates_are_kept_in_step_with_the_sessions(tmp_path):
    path = tmp_path / "chip" / "m.json"

    def case(day: int, samples: list[float]) -> baselines.BaselineCase:
        return baselines.BaselineCase("t", "224x224", {"end_to_end_tps": [samples]},
                                      recorded=[f"2026-11-{day:02d}T02:00:00+00:00"])

    baselines.update(path, model="m", chip="chip", machine={}, cases={"k": case(1, [10.0])})
    assert baselines.burst_note(baselines.read(path)) is None  # one session: nothing to say
    baselines.update(path, model="m", chip="chip", machine={}, cases={"k": case(1, [11.0])},
                     mode="add")
    note = baselines.burst_note(baselines.read(path))
    assert note and "2 baseline sessions" in note and "within 1 min" in note
    for day in range(2, 12):  # nightly: 12 sessions, the last 10 kept with their dates
        baselines.update(path, model="m", chip="chip", machine={}, cases={"k": case(day, [12.0])},
                         mode="add")
    stored = baselines.read(path).cases["k"]
    assert stored.n_sessions == 10 and stored.recorded[0].startswith("2026-11-02")
    assert baselines.burst_note(baselines.read(path)) is None
    # A file from before dates were kept: read as it is, no note, and no dates invented
    doc = json.loads(path.read_text())
    del doc["cases"]["k"]["recorded"]
    path.write_text(json.dumps(doc))
    old = baselines.read(path)
    assert old.cases["k"].recorded == [] and baselines.burst_note(old) is None
    # a new session keeps its date beside the old ones' placeholders, so the old ones age out
    assert old.cases["k"].added(case(20, [13.0])).recorded == [""] * 9 + ["2026-11-20T02:00:00+00:00"]
    partly = baselines.BaselineFile(path, "m", "chip", cases={"k": old.cases["k"].added(case(20, [13.0]))})
    assert baselines.burst_note(partly) is None  # one dated session says nothing of the spread
    for day in range(12, 22):  # once every undated session has been replaced, all are dated
        baselines.update(path, model="m", chip="chip", machine={}, cases={"k": case(day, [12.0])},
                         mode="add")
        assert all(baselines.read(path).cases["k"].recorded) is (day == 21)
    assert baselines.read(path).cases["k"].recorded[0].startswith("2026-11-12")


def _write_case(args):
    directory, i = args
    case = baselines.BaselineCase(test="t", resolution=f"{i}x{i}",
                                  sessions={"end_to_end_tps": [[float(i)]]})
    baselines.update(Path(directory) / "chip" / "m.json", model="m", chip="chip", machine={},
                     cases={f"t[{i}]": case})


def test_concurrent_updates_lose_no_write(tmp_path):
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        pool.map(_write_case, [(str(tmp_path), i) for i in range(1, 13)])
    stored = baselines.read(tmp_path / "chip" / "m.json")
    assert sorted(stored.cases) == sorted(f"t[{i}]" for i in range(1, 13))
    assert [p.name for p in (tmp_path / "chip").iterdir()] == ["m.json"]  # no lock or temp file


# -- what sessions write -----------------------------------------------------------------------

def test_update_writes_a_reviewable_file_then_the_same_code_passes(fake, monkeypatch):
    result = _baseline(fake)
    result.stdout.fnmatch_lines(["*2 baseline case(s) written to *baselines/test-chip/fake-a.json*"])
    text = (fake.path / FILE).read_text()
    doc = json.loads(text)
    assert doc["schema_version"] == 1 and doc["kind"] == "measured"
    assert doc["model"] == "fake:a" and doc["chip"] == CHIP
    assert list(doc["cases"]) == sorted(doc["cases"])
    case = doc["cases"][KEY]
    assert case["workload"]["max_tokens"] == 64 and case["workload"]["prompt"]
    assert set(case["libraries"]) == {"mlx", "mlx_vlm", "python"}
    assert set(case["metrics"]) == set(METRICS)
    assert case["sessions"] == 1
    assert [len(g) for g in case["metrics"]["end_to_end_tps"]["samples"]] == [5]
    assert case["metrics"]["image_tokens"] == {"median": 64, "samples": [[64] * 5]}
    assert sorted(p.name for p in (fake.path / FILE).parent.iterdir()) == ["fake-a.json"]
    monkeypatch.setenv("FAKE_MLX_SEED", "1")  # other noise, same code
    result = fake.runpytest(*RUN, *TWO)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*mlxvlm baselines (test-chip): 2 compared, 0 regressed, 0 new, 0 unused*"])
    assert (fake.path / FILE).read_text() == text  # comparing never writes


def test_update_new_only_keeps_existing_cases(fake, monkeypatch):
    fake.runpytest(*RUN, "--mlx-resolutions", "224x224", "--mlx-update-baselines").assert_outcomes(passed=1)
    before = json.loads((fake.path / FILE).read_text())["cases"]
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.5")
    result = fake.runpytest(*RUN, *TWO, "--mlx-update-baselines=new")
    result.assert_outcomes(passed=2)  # update mode never fails on a regression
    result.stdout.fnmatch_lines(["*1 baseline case(s) written to*"])
    after = json.loads((fake.path / FILE).read_text())["cases"]
    assert after[KEY] == before[KEY]
    assert len(after) == 2
    result = fake.runpytest(*RUN, *TWO, "--mlx-update-baselines")
    result.stdout.fnmatch_lines(["*2 baseline case(s) written to*"])
    assert json.loads((fake.path / FILE).read_text())["cases"][KEY] != before[KEY]


@pytest.mark.parametrize("content, problem", [
    ("{not json", "invalid JSON"),
    ('{"schema_version": 99, "model": "fake:a", "chip": "test-chip", "cases": {}}',
     "unknown schema_version 99"),
    ('{"schema_version": 1, "model": "fake:a", "chip": "test-chip", "cases": {"k": {"metrics": '
     '{"end_to_end_tps": {"samples": [-3]}}}}}', "sample -3 is negative or not finite"),
    ('{"schema_version": 1, "model": "fake:a", "chip": "test-chip", "cases": {"k": {"metrics": '
     '{"end_to_end_tps": {"median": 3}}}}}', "missing samples"),
    ('{"schema_version": 1, "model": "fake:a", "chip": "other-chip", "cases": {}}',
     "it is for chip 'other-chip', not 'test-chip'"),
])
def test_corrupt_baseline_is_reported_and_never_overwritten(fake, content, problem):
    path = fake.path / FILE
    path.parent.mkdir(parents=True)
    path.write_text(content)
    result = fake.runpytest(*RUN, *TWO)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([f"corrupt baseline *fake-a.json: *{problem}*Nothing was overwritten*",
                                 "*mlxvlm baselines (test-chip): 0 compared, 0 regressed, 0 new, 0 unused, "
                                 "2 not compared (baseline unreadable)*"])
    assert "During handling" not in result.stdout.str()
    result = fake.runpytest(*RUN, *TWO, "--mlx-update-baselines")
    result.stdout.fnmatch_lines(["*baselines not updated*"])
    assert path.read_text() == content


def test_a_failed_session_writes_nothing(fake):
    fake.makepyfile(test_broken="def test_broken():\n    assert False\n")
    result = fake.runpytest(*RUN, *TWO, "--mlx-update-baselines", "--mlx-suite", "images")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*baselines not updated: the session did not pass (exit status 1)*"])
    assert not (fake.path / FILE).exists()


def test_another_chips_baseline_is_never_read(fake, monkeypatch):
    _baseline(fake)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "2")
    result = fake.runpytest(*RUN[:2], "--mlx-chip", "other-chip", *RUN[4:], *TWO)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*mlxvlm baselines (other-chip): 0 compared, 0 regressed, 2 new*"])


def test_the_chip_can_come_from_the_environment(fake, monkeypatch):
    monkeypatch.setenv("PYTEST_MLXVLM_CHIP", "Env Chip")
    fake.runpytest(*RUN[:2], *RUN[4:], "--mlx-resolutions", "224x224",
                   "--mlx-update-baselines").assert_outcomes(passed=1)
    assert (fake.path / "baselines" / "env-chip" / "fake-a.json").is_file()


def test_two_sessions_updating_at_once(fake):
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *RUN, "--mlx-resolutions", res,
             "--mlx-update-baselines"],
            cwd=fake.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for res in ("224x224", "336x336", "448x448")
    ]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    cases = json.loads((fake.path / FILE).read_text())["cases"]
    assert len(cases) == 3


def test_sessions_from_several_machines_of_one_chip_share_a_file(fake, monkeypatch):
    """A CI matrix or fresh cloud machines: each =add keeps which machine ran the session."""
    from pytest_mlxvlm.common import machine

    identity = dict(machine.detect())
    for host in ("host-a", "host-b", "host-a"):
        monkeypatch.setattr("pytest_mlxvlm.common.machine.detect", lambda host=host: {**identity, "host": host})
        fake.runpytest(*RUN, "--mlx-resolutions", "224x224", "--mlx-update-baselines=add").assert_outcomes(passed=1)
    stored = baselines.read(fake.path / FILE)
    (case,) = stored.cases.values()
    assert case.hosts == ["host-a", "host-b", "host-a"] and case.n_hosts == 2
    assert len(case.recorded) == case.n_sessions == 3
    assert json.loads((fake.path / FILE).read_text())["cases"][case_key(case)]["hosts"] == case.hosts


def case_key(case):
    return f"pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[{case.resolution}]"


def test_sessions_from_two_machines_minutes_apart_are_not_a_burst(tmp_path):
    """A CI matrix or two fresh cloud machines: the spread between machines is in the baseline."""
    path = tmp_path / "chip" / "m.json"

    def case(host: str) -> baselines.BaselineCase:
        return baselines.BaselineCase("t", "224x224", {"end_to_end_tps": [[10.0]]},
                                      recorded=["2026-11-01T02:00:00+00:00"], hosts=[host])

    baselines.update(path, model="m", chip="chip", machine={}, cases={"k": case("a1")})
    baselines.update(path, model="m", chip="chip", machine={}, cases={"k": case("a1")}, mode="add")
    assert "on one machine" in baselines.burst_note(baselines.read(path))
    baselines.update(path, model="m", chip="chip", machine={}, cases={"k": case("b2")}, mode="add")
    stored = baselines.read(path)
    assert stored.cases["k"].hosts == ["a1", "a1", "b2"] and baselines.burst_note(stored) is None


def test_the_measured_baselines_this_repository_ships_follow_its_own_rule():
    """Each shipped measured baseline can gate: 3+ sessions at two times or from two machines."""
    from pytest_mlxvlm.gate import decision as gate

    shipped = Path(__file__).parents[1] / "baselines"
    measured = [b for b in map(baselines.read, sorted(shipped.rglob("*.json"))) if b.kind == "measured"]
    for stored in measured:
        for key, case in stored.cases.items():
            assert gate.ungated_reason(case, reference=False, min_sessions=3) is None, (stored.path, key)
