"""The baseline gate end to end: pytester sessions on the exact fake engine."""

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mlxvlm import baselines
from pytest_mlxvlm.results import METRICS

CONFTEST = """
from pytest_mlxvlm.testing import FakeEngine

def pytest_configure(config):
    config.pluginmanager.register(FakeEngine(), "fake-engine")
"""
CHIP = "test-chip"
FILE = Path("baselines") / CHIP / "fake-a.json"
RUN = ["--mlx-model", "fake:a", "--mlx-chip", CHIP, "--mlx-rounds", "5", "-p", "no:benchmark"]
TWO = ["--mlx-resolutions", "224x224,448x448"]


@pytest.fixture
def fake(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    for var in ("FAKE_MLX_SLOWDOWN", "FAKE_MLX_NOISE", "FAKE_MLX_SEED",
                "FAKE_MLX_IMAGE_TOKENS_EXTRA", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FAKE_MLX_NOISE", "0.02")
    return pytester


def _baseline(fake: pytest.Pytester, *extra: str) -> pytest.RunResult:
    result = fake.runpytest(*RUN, *TWO, "--mlx-update-baselines", *extra)
    result.assert_outcomes(passed=2)
    return result


def test_update_writes_a_reviewable_file_then_the_same_code_passes(fake, monkeypatch):
    result = _baseline(fake)
    result.stdout.fnmatch_lines(["*2 baseline case(s) written to *baselines/test-chip/fake-a.json*"])
    text = (fake.path / FILE).read_text()
    doc = json.loads(text)
    assert doc["schema_version"] == 1 and doc["kind"] == "measured"
    assert doc["model"] == "fake:a" and doc["chip"] == CHIP
    assert list(doc["cases"]) == sorted(doc["cases"])
    key = "pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[224x224]"
    case = doc["cases"][key]
    assert case["workload"]["max_tokens"] == 64 and case["workload"]["prompt"]
    assert set(case["libraries"]) == {"mlx", "mlx_vlm", "python"}
    assert set(case["metrics"]) == set(METRICS)
    assert case["sessions"] == 1
    assert [len(g) for g in case["metrics"]["end_to_end_tps"]["samples"]] == [5]
    assert case["metrics"]["image_tokens"] == {"median": 64, "samples": [[64] * 5]}
    monkeypatch.setenv("FAKE_MLX_SEED", "1")  # other noise, same code
    result = fake.runpytest(*RUN, *TWO)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*mlxvlm baselines (test-chip): 2 compared, 0 regressed, 0 new, 0 unused*"])
    assert (fake.path / FILE).read_text() == text  # comparing never writes


def test_real_slowdown_fails_each_case_with_an_actionable_message(fake, monkeypatch):
    _baseline(fake)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.3")
    monkeypatch.setenv("FAKE_MLX_SEED", "2")
    result = fake.runpytest(*RUN, *TWO, "--mlx-json", "out.json")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*mlxvlm: regression in pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[[]224x224[]] "
        "(fake:a on test-chip) (confirmed by measuring again):",
        "*Speed (end_to_end_tps): baseline * tok/s, now * tok/s, -2?.?% (tolerance 10%), "
        "Mann-Whitney p=* (n=10 vs 5)",
        "*baseline file: *baselines/test-chip/fake-a.json",
        "*if this is expected, update the baseline: pytest --mlx-model fake:a * "
        "--mlx-update-baselines -k fake:a-224x224",
    ], consecutive=False)
    result.stdout.fnmatch_lines(["*2 compared, 2 regressed, 0 new, 0 unused*"])
    doc = json.loads((fake.path / "out.json").read_text())
    case = doc["results"][0]
    assert len(case["samples"]) == 10  # measured again once to confirm
    cmp = case["comparison"]
    assert cmp["status"] == "regressed" and cmp["confirmed"] is True
    speed = next(m for m in cmp["metrics"] if m["metric"] == "end_to_end_tps")
    assert speed["verdict"] == "regressed" and speed["p_value"] < 0.05


def test_slowdown_within_tolerance_passes(fake, monkeypatch):
    _baseline(fake)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.04")
    fake.runpytest(*RUN, *TWO).assert_outcomes(passed=2)


def test_tolerances_from_command_line_ini_and_marker(fake, monkeypatch):
    _baseline(fake)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.3")
    wide = ["end_to_end_tps=40", "generation_tps=40", "prompt_tps=40", "ttft_s=40"]
    args = [a for t in wide for a in ("--mlx-tolerance", t)]
    fake.runpytest(*RUN, *TWO, *args).assert_outcomes(passed=2)
    ini = fake.makeini("[pytest]\nmlx_tolerance =\n    " + "\n    ".join(wide))
    fake.runpytest(*RUN, *TWO).assert_outcomes(passed=2)
    ini.unlink()
    fake.makepyfile(test_marked="""
        import pytest
        @pytest.mark.mlx_benchmark(tolerance={"end_to_end_tps": 40, "generation_tps": 40,
                                              "prompt_tps": 40, "ttft_s": 40})
        def test_image_generation(mlx_bench):
            mlx_bench.run()
    """)
    # the user's test has its own cases: create them, then slow down
    monkeypatch.delenv("FAKE_MLX_SLOWDOWN")
    own = ["test_marked.py", *RUN, *TWO, "--mlx-suite", "off"]
    fake.runpytest(*own, "--mlx-update-baselines=new").assert_outcomes(passed=2)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.3")
    fake.runpytest(*own).assert_outcomes(passed=2)
    fake.runpytest(*own, "--mlx-no-confirm").assert_outcomes(passed=2)


def test_improvement_passes_and_can_flag_a_stale_baseline(fake, monkeypatch):
    _baseline(fake)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "0.7")
    result = fake.runpytest(*RUN, *TWO, "--mlx-stale-threshold", "20")
    result.assert_outcomes(passed=2)
    assert result.stdout.str().count("MlxStaleBaselineWarning:") == 2  # one per stale case
    result.stdout.fnmatch_lines([
        "*MlxStaleBaselineWarning: *[[]224x224[]] improved beyond 20%: end_to_end_tps +4?.?%, *stale*",
        "*2 compared, 0 regressed, 0 new, 0 unused, 2 improved*",
    ], consecutive=False)


@pytest.mark.parametrize("policy, outcome, line", [
    ("warn", {"passed": 2}, "*0 compared, 0 regressed, 2 new, 0 unused*"),
    ("fail", {"failed": 2}, "*no baseline for pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[[]224x224[]]"
                            " in *fake-a.json; create it with --mlx-update-baselines=new"),
    ("skip", {"skipped": 2}, "*SKIPPED*no baseline for*"),
])
def test_missing_baseline_policy(fake, policy, outcome, line):
    result = fake.runpytest(*RUN, *TWO, "--mlx-missing-baseline", policy, "-rs")
    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines([line])
    assert not (fake.path / FILE).exists()


def test_unused_baselines_are_listed(fake):
    _baseline(fake)
    result = fake.runpytest(*RUN, "--mlx-resolutions", "224x224")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*1 compared, 0 regressed, 0 new, 1 unused*",
        "unused baseline: pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[[]448x448[]] (fake:a, *)",
    ])


def test_update_new_only_keeps_existing_cases(fake, monkeypatch):
    fake.runpytest(*RUN, "--mlx-resolutions", "224x224", "--mlx-update-baselines").assert_outcomes(passed=1)
    before = json.loads((fake.path / FILE).read_text())["cases"]
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.5")
    result = fake.runpytest(*RUN, *TWO, "--mlx-update-baselines=new")
    result.assert_outcomes(passed=2)  # update mode never fails on a regression
    result.stdout.fnmatch_lines(["*1 baseline case(s) written to*"])
    after = json.loads((fake.path / FILE).read_text())["cases"]
    key = "pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[224x224]"
    assert after[key] == before[key]
    assert len(after) == 2
    result = fake.runpytest(*RUN, *TWO, "--mlx-update-baselines")
    result.stdout.fnmatch_lines(["*2 baseline case(s) written to*"])
    assert json.loads((fake.path / FILE).read_text())["cases"][key] != before[key]


def test_baselines_of_several_sessions_allow_for_drift(fake, monkeypatch):
    for seed, slowdown in enumerate(("1.0", "1.25", "0.9", "1.15")):  # a machine that drifts
        monkeypatch.setenv("FAKE_MLX_SEED", str(seed))
        monkeypatch.setenv("FAKE_MLX_SLOWDOWN", slowdown)
        mode = "--mlx-update-baselines" + ("=add" if seed else "")
        fake.runpytest(*RUN, *TWO, mode).assert_outcomes(passed=2)
    doc = json.loads((fake.path / FILE).read_text())
    case = doc["cases"]["pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[224x224]"]
    assert case["sessions"] == 4
    assert [len(g) for g in case["metrics"]["end_to_end_tps"]["samples"]] == [5, 5, 5, 5]
    assert len(case["recorded"]) == 4 and case["recorded"][0].endswith("+00:00")
    # 20% slower than the baseline's middle is within the drift these sessions showed ...
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.25")
    result = fake.runpytest(*RUN, *TWO, "--mlx-json", "o.json")
    result.assert_outcomes(passed=2)
    speed = next(m for m in json.loads((fake.path / "o.json").read_text())["results"][0]
                 ["comparison"]["metrics"] if m["metric"] == "end_to_end_tps")
    assert speed["sessions"] == 4 and speed["allowed"] > 0.2
    # the allowance is a family-wise share: 0.05 over 2 measured tests x 4 gated metrics
    assert speed["drift_alpha"] == pytest.approx(0.05 / 8)
    # all four sessions ran within a minute: the gate says the allowance saw only that
    result.stdout.fnmatch_lines(["*fake:a: the 4 baseline sessions in *fake-a.json were recorded "
                                 "within 1 min*--mlx-update-baselines=add*"])
    # ... four times as slow is not (four sessions that drift this much, judged at the
    # session's family-wise level 0.05 / (2 tests x 4 metrics), allow about 60%)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "4.0")
    result = fake.runpytest(*RUN, *TWO)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*drift over 4 baseline sessions allows *% at level 0.0063*"])


def test_changed_token_counts_are_a_changed_workload(fake, monkeypatch):
    _baseline(fake)
    monkeypatch.setenv("FAKE_MLX_IMAGE_TOKENS_EXTRA", "5")
    result = fake.runpytest(*RUN, *TWO)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*the workload of pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[[]224x224[]] changed*"
        "speed was not compared:",
        "*prompt_tokens: baseline 90, now 95",
        "*image_tokens: baseline 64, now 69",
    ], consecutive=False)
    result.stdout.fnmatch_lines(["*0 compared, 0 regressed, 0 new, 0 unused, 2 workload changed*"])


def test_other_workload_settings_are_not_compared(fake, monkeypatch):
    _baseline(fake)
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "2")
    result = fake.runpytest(*RUN, *TWO, "--mlx-max-tokens", "32", "--mlx-markdown", "pr.md")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*0 compared, 0 regressed, 0 new, 0 unused, 2 not comparable*"])
    assert "not comparable: max_tokens: 64 → 32" in (fake.path / "pr.md").read_text()


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
    result.stdout.fnmatch_lines([f"corrupt baseline *fake-a.json: *{problem}*Nothing was overwritten*"])
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


def test_library_version_change_is_shown(fake, monkeypatch):
    _baseline(fake)
    path = fake.path / FILE
    path.write_text(path.read_text().replace('"mlx": "0.32.4"', '"mlx": "0.31.0"'))
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.5")
    result = fake.runpytest(*RUN, *TWO)
    result.stdout.fnmatch_lines(["*library versions changed since the baseline: mlx 0.31.0 -> 0.32.4*"])


def test_markdown_report_for_pull_requests(fake, monkeypatch):
    _baseline(fake)
    summary = fake.path / "step-summary.md"
    summary.write_text("previous step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.3")
    fake.runpytest(*RUN, *TWO, "--mlx-markdown", "pr.md", "--mlx-no-confirm")
    text = (fake.path / "pr.md").read_text()
    assert text.startswith("## pytest-mlxvlm on `test-chip`")
    assert "**2 compared, 2 regressed, 0 new, 0 unused**" in text
    assert "| Case | Metric | Baseline | Now | Change | Verdict |" in text
    assert "| `pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[224x224]` | Speed |" in text
    assert "❌ regressed (p=" in text
    assert summary.read_text() == "previous step\n" + text


def test_reference_baseline_compares_speed_with_its_own_tolerance(fake):
    path = fake.path / FILE.with_suffix(".reference.json")
    path.parent.mkdir(parents=True)
    key = "pytest_mlxvlm.builtin.test_mlxvlm_images::test_image_generation[224x224]"
    doc = {"schema_version": 1, "kind": "reference", "model": "fake:a", "chip": CHIP,
           "reference": {"tolerance": 0.3, "method": "one run"},
           "cases": {key: {"test": "test_image_generation", "resolution": "224x224",
                           "metrics": {"end_to_end_tps": {"median": 200, "samples": [200]}}}}}
    path.write_text(json.dumps(doc))
    result = fake.runpytest(*RUN, "--mlx-resolutions", "224x224")
    result.assert_outcomes(failed=1)  # the fake runs at about 88.8 tok/s: -56% beyond 30%
    result.stdout.fnmatch_lines(["*Speed (end_to_end_tps): baseline 200.00 tok/s, now 8?.?? tok/s, -5?.?% "
                                 "(tolerance 30%), reference figure (n=1), tolerance only"])
    result = fake.runpytest(*RUN, "--mlx-resolutions", "224x224", "--mlx-update-baselines")
    result.stdout.fnmatch_lines(["*1 baseline case(s) written to *fake-a.json"])
    assert json.loads(path.read_text()) == doc  # the reference is never touched
    result = fake.runpytest(*RUN, "--mlx-resolutions", "224x224")
    result.assert_outcomes(passed=1)  # measured baselines take precedence over references


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
    assert old.cases["k"].added(case(20, [13.0])).recorded == []
