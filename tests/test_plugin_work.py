"""The work profile through the plugin, on the exact fake engine: recorded, stored in baselines,
compared exactly, and each verdict shown where the timing verdict is."""

import json

import pytest

RUN = ["--mlx-model", "fake:a", "--mlx-resolutions", "224x224,448x448", "--mlx-rounds", "3",
       "-p", "no:cacheprovider"]


def record(fake: pytest.Pytester) -> None:
    result = fake.runpytest(*RUN, "--mlx-update-baselines")
    result.assert_outcomes(passed=2)


def report(fake: pytest.Pytester, name: str = "out.json") -> dict:
    return json.loads((fake.path / name).read_text())


def test_a_baseline_stores_the_work_and_unchanged_code_does_the_same_work(fake):
    record(fake)
    stored = json.loads(next((fake.path / "baselines").rglob("fake-a.json")).read_text())
    work = stored["cases"]["test_mlxvlm_images::test_image_generation[224x224]"]["work"] \
        if "test_mlxvlm_images::test_image_generation[224x224]" in stored["cases"] \
        else next(iter(stored["cases"].values()))["work"]
    assert work["phases"]["decode_step"]["primitives"]["Matmul"] == 19
    assert len(work["token_ids"]) == 64 and work["hash"]
    result = fake.runpytest(*RUN, "--mlx-json", "out.json", "--junitxml", "junit.xml")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["mlxvlm work profile against the baseline (exact): 2 same work"])
    checks = [r["work_check"] for r in report(fake)["results"]]
    assert [(c["verdict"], c["outputs"]) for c in checks] == [("same", "outputs identical")] * 2
    assert 'name="mlxvlm_work" value="same: same work; outputs identical"' in (fake.path / "junit.xml").read_text()


def test_added_work_fails_on_one_session_of_baseline_even_with_identical_timing(fake, monkeypatch):
    record(fake)  # one session: too weak to gate on timing, exact enough for work
    monkeypatch.setenv("FAKE_MLX_EXTRA_WORK", "decode_step:Multiply=60,eval=1;prefill:Matmul=6")
    result = fake.runpytest(*RUN, "--mlx-json", "out.json", "--mlx-markdown", "pr.md")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*mlxvlm: work regressed in *test_image_generation?224x224? at 224x224 (fake:a on *): "
        "+60 Multiply, +1 eval per decode step; +6 Matmul in prefill (against *fake-a.json)",
        "*if the change is intended, record the new work: *--mlx-update-baselines*",
        "*ADDED WORK: *448x448?: +60 Multiply, +1 eval per decode step; +6 Matmul in prefill",
        "*mlxvlm baselines (*): 2 compared, 0 regressed, 0 new, 0 unused, 2 not gated, 2 added work*",
    ])
    assert {r["work_check"]["verdict"] for r in report(fake)["results"]} == {"added"}
    markdown = (fake.path / "pr.md").read_text()
    assert "### Work profile (exact, against the baseline)" in markdown
    assert "❌ ADDED WORK: +60 Multiply, +1 eval per decode step; +6 Matmul in prefill" in markdown
    # the intended change is accepted by updating the baseline; then it passes
    fake.runpytest(*RUN, "--mlx-update-baselines").assert_outcomes(passed=2)
    fake.runpytest(*RUN).assert_outcomes(passed=2)


def test_report_mode_shows_added_work_without_failing(fake, monkeypatch):
    record(fake)
    monkeypatch.setenv("FAKE_MLX_EXTRA_WORK", "decode_step:Add=2")
    result = fake.runpytest(*RUN, "--mlx-work", "report")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*ADDED WORK: *: +2 Add per decode step (reported, --mlx-work report)"])


@pytest.mark.parametrize("extra,verdict,shown", [
    ("decode_step:Multiply=-32", "removed", "less work: *: -32 Multiply per decode step"),
    ("decode_step:Reshape=3,Transpose=-1", "views", "views only: *: +3 Reshape, -1 Transpose per decode step (views only)"),
])
def test_removed_work_and_view_changes_are_reported_not_failed(fake, monkeypatch, extra, verdict, shown):
    record(fake)
    monkeypatch.setenv("FAKE_MLX_EXTRA_WORK", extra)
    result = fake.runpytest(*RUN, "--mlx-json", "out.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"  {shown}"])
    assert {r["work_check"]["verdict"] for r in report(fake)["results"]} == {verdict}


def test_another_mlx_is_not_comparable_and_says_which_part_changed(fake, monkeypatch):
    record(fake)
    monkeypatch.setenv("FAKE_MLX_VERSION", "0.99.0")
    monkeypatch.setenv("FAKE_MLX_EXTRA_WORK", "decode_step:Multiply=60")  # not judged across versions
    result = fake.runpytest(*RUN)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*2 not comparable", "  not comparable: *224x224?: mlx 0.0-fake → 0.99.0"])


def test_changed_outputs_are_reported_and_fail_only_when_asked(fake, monkeypatch):
    record(fake)
    monkeypatch.setenv("FAKE_MLX_OUTPUT_CHANGE_AT", "17")
    result = fake.runpytest(*RUN)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["  same work: *: same work; outputs differ from token 17"])
    result = fake.runpytest(*RUN, "--mlx-outputs", "gate")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*mlxvlm: outputs changed in *: outputs differ from token 17 (against *)"])


def test_work_off_records_nothing(fake):
    result = fake.runpytest(*RUN, "--mlx-work", "off", "--mlx-json", "out.json")
    result.assert_outcomes(passed=2)
    assert "work profile" not in result.stdout.str()
    assert [(r["work"], r["work_check"]) for r in report(fake)["results"]] == [(None, None)] * 2


def test_no_baseline_yet_and_bad_settings(fake):
    result = fake.runpytest(*RUN, "--mlx-json", "out.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*2 new (nothing to compare with yet)"])
    assert not [line for line in result.outlines if line.startswith("  new")]  # counted, not listed
    assert all(r["work"]["tokens"] == 64 for r in report(fake)["results"])
    result = fake.runpytest(*RUN, "--mlx-work", "sometimes")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--mlx-work*invalid choice*"])


def test_the_profile_round_is_the_last_warmup_round(fake):
    """No extra generation when there is a warmup: 1 warmup (profiled) + 3 rounds per case."""
    fake.makeconftest(fake.path.joinpath("conftest.py").read_text() + (
        "\ncalls = []\n"
        "def pytest_mlxvlm_case_finished(config, result):\n"
        "    engine = config.pluginmanager.get_plugin('fake-engine')\n"
        "    calls.append(engine.calls)\n"
        "    print('CALLS', engine.calls)\n"))
    result = fake.runpytest(*RUN, "-s")
    result.stdout.fnmatch_lines(["*CALLS 4*", "*CALLS 8*"])
    result = fake.runpytest(*RUN, "-s", "--mlx-warmup", "0")
    result.stdout.fnmatch_lines(["*CALLS 4*", "*CALLS 8*"])  # one profiled round instead


def test_a_corrupt_stored_profile_names_the_field(fake):
    record(fake)
    path = next((fake.path / "baselines").rglob("fake-a.json"))
    doc = json.loads(path.read_text())
    next(iter(doc["cases"].values()))["work"]["token_ids"] = ["x"]
    path.write_text(json.dumps(doc))
    before = path.read_text()
    result = fake.runpytest(*RUN)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*work: 'token_ids' is not a list of integers*"])
    assert path.read_text() == before


def test_the_history_keeps_each_cases_work(fake, monkeypatch):
    fake.runpytest(*RUN, "--mlx-history", "h.jsonl").assert_outcomes(passed=2)
    monkeypatch.setenv("FAKE_MLX_EXTRA_WORK", "decode_step:Add=1")
    fake.runpytest(*RUN, "--mlx-history", "h.jsonl").assert_outcomes(passed=2)  # no baseline: recorded only
    sessions = [json.loads(line) for line in (fake.path / "h.jsonl").read_text().splitlines()]
    hashes = [[c["work"]["hash"] for c in s["cases"]] for s in sessions]
    assert hashes[0] != hashes[1] and all(len(set(h)) == 1 for h in hashes)  # same work at both sizes


def test_an_engine_without_a_recorder_is_reported_not_failed(pytester):
    """A user's own engine (the measure hook only): no profile, said so, and the test passes."""
    pytester.makeconftest(
        "from pytest_mlxvlm.testing import FakeEngine\n"
        "import pytest\n"
        "class MeasureOnly:\n"
        "    def __init__(self):\n"
        "        self.engine = FakeEngine()\n"
        "    @pytest.hookimpl(tryfirst=True)\n"
        "    def pytest_mlxvlm_load_model(self, spec, settings):\n"
        "        return self.engine.pytest_mlxvlm_load_model(spec, settings)\n"
        "    @pytest.hookimpl(tryfirst=True)\n"
        "    def pytest_mlxvlm_measure(self, model, request):\n"
        "        return self.engine.pytest_mlxvlm_measure(model, request)\n"
        "def pytest_configure(config):\n"
        "    config.pluginmanager.register(MeasureOnly(), 'measure-only')\n")
    result = pytester.runpytest(*RUN, "--mlx-json", "out.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*2 no profile", "  no profile: *: no work profile: the engine that measures this model records no work profile"])
