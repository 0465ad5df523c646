"""pytester sessions on the fake engine: exact numbers, no MLX work."""

import json

import pytest

from pytest_mlxvlm.common import machine
from pytest_mlxvlm.testing import CONFTEST


MY_TEST = """
import pytest

@pytest.mark.mlx_benchmark(rounds=3, max_tokens=16, resolutions="448x448")
def test_mine(mlx_bench):
    mlx_bench.run()
"""


def test_header_says_what_each_test_will_use(fake: pytest.Pytester):
    """Per test, the sizes, rounds, warmup and tokens it will use (its marker applied), not the
    session's defaults."""
    fake.makepyfile(test_mine=MY_TEST)
    result = fake.runpytest("--mlx-model", "fake:a", "--quick", "--co", "--mlx-suite", "images")
    result.stdout.fnmatch_lines([
        "mlxvlm: models fake:a",
        "mlxvlm: test_mine [[]448x448[]]: 3 rounds after 1 warmup, 16 tokens each",
        "mlxvlm: test_image_generation [[]224x224, 448x448, 768x768, 1024x1024[]]: 5 rounds after 1 "
        "warmup, 64 tokens each",
    ])
    adaptive = fake.runpytest("--mlx-model", "fake:a", "--co", "--mlx-rounds", "4:9", "--mlx-suite", "off")
    adaptive.stdout.fnmatch_lines(["mlxvlm: test_mine [[]448x448[]]: 3 rounds after 1 warmup, 16 tokens each"])
    fake.makepyfile(test_mine=MY_TEST.replace("rounds=3, ", ""))
    adaptive = fake.runpytest("--mlx-model", "fake:a", "--co", "--mlx-rounds", "4:9")
    adaptive.stdout.fnmatch_lines(["mlxvlm: test_mine [[]448x448[]]: 4 to 9 rounds (until each median is "
                                   "within ±3%, at most 120 s a case) after 1 warmup, 16 tokens each"])


def test_no_header_lines_where_nothing_is_measured(pytester: pytest.Pytester):
    """Installed in another project: pytest's header and collection say nothing of the plugin."""
    pytester.makepyfile("def test_plain(): pass")
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)
    assert not [line for line in result.stdout.lines if line.startswith("mlxvlm")]


def test_auto_adds_the_sweep_only_to_a_session_without_measured_tests_of_its_own(fake: pytest.Pytester):
    alone = fake.runpytest("--mlx-model", "fake:a", "--co", "-q")
    assert sum("::test_image_generation[" in line for line in alone.stdout.lines) == 10
    fake.makepyfile(test_mine=MY_TEST, test_plain="def test_plain(): pass")
    result = fake.runpytest("--mlx-model", "fake:a", "--co")
    result.stdout.fnmatch_lines([
        "collected 12 items / 10 deselected / 2 selected",
        "mlxvlm: the built-in image sweep (10 tests) is not added: this session has 1 measured test "
        "of its own; add it with --mlx-suite images",
    ], consecutive=False)
    assert "test_image_generation" not in result.stdout.str().split("deselected")[-1]
    named = fake.runpytest("--mlx-model", "fake:a", "--co", "-q", "--mlx-suite", "images")
    assert sum("::test_image_generation[" in line for line in named.stdout.lines) == 10
    # -k that deselects the session's own measured tests leaves the sweep to run
    swept = fake.runpytest("--mlx-model", "fake:a", "--co", "-q", "-k", "image_generation")
    assert sum("::test_image_generation[" in line for line in swept.stdout.lines) == 10


def test_a_session_of_cache_tests_alone_gets_no_sweep(fake: pytest.Pytester):
    """Tests of the prefix cache (``mlx_cache``) are the session's own too: no 10-size sweep beside them."""
    fake.makepyfile(test_app_cache="def test_my_cache(mlx_cache, mlx_cache_image):\n    pass\n")
    result = fake.runpytest("--mlx-model", "fake:a", "--co")
    result.stdout.fnmatch_lines(["*the built-in image sweep (10 tests) is not added: this session has * measured "
                                 "test* of its own*"])  # one per cache engine installed


def test_json_gives_the_settings_each_test_used(fake: pytest.Pytester):
    fake.makepyfile(test_mine=MY_TEST)
    result = fake.runpytest("--mlx-model", "fake:a", "--mlx-suite", "images", "--mlx-resolutions",
                            "224x224", "--mlx-json", "r.json", "--mlx-max-tokens", "8")
    result.assert_outcomes(passed=2)
    settings = json.loads((fake.path / "r.json").read_text())["settings"]
    assert settings["resolutions"] == ["448x448", "224x224"]
    assert (settings["rounds"], settings["max_tokens"], settings["warmup"]) == ([3, 5], [16, 8], 1)
    tests = settings["tests"]
    assert tests["test_mine.py::test_mine"] == {
        "cases": ["448x448"], "rounds": 3, "max_tokens": 16, "warmup": 1,
        "prompt": "Describe this image in detail.", "image": "synthetic"}
    builtin = next(v for k, v in tests.items() if k.endswith("::test_image_generation"))
    assert (builtin["cases"], builtin["rounds"], builtin["max_tokens"]) == (["224x224"], 5, 8)
    assert settings["defaults"]["rounds"] == 5 and settings["defaults"]["resolutions"] == ["224x224"]
    only_mine = fake.runpytest("--mlx-model", "fake:a", "--mlx-json", "m.json")
    settings = json.loads((fake.path / "m.json").read_text())["settings"]
    assert (settings["resolutions"], settings["rounds"], settings["max_tokens"]) == (["448x448"], 3, 16)
    only_mine.assert_outcomes(passed=1)


def test_full_sweep_ids_across_models(fake: pytest.Pytester):
    result = fake.runpytest("--mlx-model", "fake:a", "--mlx-model", "fake:b", "--co", "-q")
    ids = [line for line in result.stdout.lines if "::test_image_generation[" in line]
    assert len(ids) == 20
    assert ids[0].endswith("[fake:a-224x224]") and ids[9].endswith("[fake:a-1920x1080]")
    assert ids[10].endswith("[fake:b-224x224]")


def test_ini_settings_mirror_the_options(fake: pytest.Pytester):
    fake.makeini(
        """
        [pytest]
        mlx_model = fake:ini-model
        mlx_resolutions = 336x336
        mlx_rounds = 3
        mlx_warmup = 0
        mlx_max_tokens = 7
        mlx_prompt = What is this?
        mlx_json = from-ini.json
        mlx_suite = images
        """
    )
    result = fake.runpytest()
    result.assert_outcomes(passed=1)
    doc = json.loads((fake.path / "from-ini.json").read_text())
    assert doc["settings"]["models"] == ["fake:ini-model"]
    assert doc["settings"]["resolutions"] == ["336x336"]
    assert (doc["settings"]["rounds"], doc["settings"]["warmup"], doc["settings"]["max_tokens"]) == (3, 0, 7)
    assert doc["settings"]["prompt"] == "What is this?"
    case = doc["results"][0]
    assert len(case["samples"]) == 3 and case["warmup_samples"] == []
    # the fake engine's exact numbers: 336² -> 11 x 11 cells
    assert case["samples"][0]["image_tokens"] == 121
    # and the command line wins over ini
    result = fake.runpytest("--mlx-rounds", "2", "--mlx-json", "cli.json")
    doc = json.loads((fake.path / "cli.json").read_text())
    assert len(doc["results"][0]["samples"]) == 2


def test_marker_beats_command_line(fake: pytest.Pytester):
    fake.makepyfile(
        """
        import pytest

        @pytest.mark.mlx_benchmark(rounds=2, max_tokens=5, resolutions="224x224")
        def test_marked(mlx_bench):
            r = mlx_bench.run()
            assert len(r.samples) == 2 and r.samples[0].generation_tokens == 5
        """
    )
    result = fake.runpytest("--mlx-model", "fake:m", "--mlx-suite", "off",
                            "--mlx-rounds", "9", "--mlx-resolutions", "448x448", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_marked[[]fake:m-224x224[]] PASSED*"])


def test_bad_marker_fails_collection_of_that_test(fake: pytest.Pytester):
    fake.makepyfile(
        """
        import pytest

        @pytest.mark.mlx_benchmark(rounds=0)
        def test_marked(mlx_bench):
            pass
        """
    )
    result = fake.runpytest("--mlx-suite", "off")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_marked: rounds must be between 1 and 1000000, got 0*"])


def test_bad_run_arguments_fail_their_test_in_one_line_and_the_session_goes_on(fake: pytest.Pytester):
    """run()'s counts and image are checked as the marker's are: one line, no traceback, and the
    tests after it run (a case with no sample once broke every later test's setup)."""
    fake.makepyfile(
        """
        def test_zero_rounds(mlx_bench):
            mlx_bench.run(rounds=0)

        def test_words(mlx_bench):
            mlx_bench.run(max_tokens="many")

        def test_missing_image(mlx_bench):
            mlx_bench.run(image="/nonexistent/cat.png")

        def test_after(mlx_bench):
            mlx_bench.run(rounds="2")
        """
    )
    result = fake.runpytest("--mlx-suite", "off", "--mlx-resolutions", "224x224")
    result.assert_outcomes(failed=3, passed=1)
    result.stdout.fnmatch_lines([
        "*test_zero_rounds*: MlxBench.run(): rounds must be between 1 and 1000000, got 0",
        "*test_words*: MlxBench.run(): max_tokens must be a whole number, got 'many'",
        "*test_missing_image*: MlxBench.run(): cannot open image '/nonexistent/cat.png': no such file",
    ], consecutive=False)
    assert "Traceback" not in result.stdout.str() and "torn down" not in result.stdout.str()


def test_model_is_loaded_once_per_session(fake: pytest.Pytester):
    fake.makeconftest(
        CONFTEST
        + """
import pytest
LOADS = []

@pytest.hookimpl(hookwrapper=True)
def pytest_mlxvlm_load_model(spec, settings):
    LOADS.append(spec)
    yield

def pytest_sessionfinish(session):
    print("LOADS", LOADS)
"""
    )
    result = fake.runpytest("--mlx-model", "fake:a", "--mlx-model", "fake:b", "--quick", "-s",
                            "--mlx-rounds", "1")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["*LOADS [[]'fake:a', 'fake:b'[]]*"])


def test_pytest_benchmark_only_when_asked(fake: pytest.Pytester):
    """Installed (the dev extra) but not asked for: nothing is handed to it, so no second table."""
    run = ["--mlx-model", "fake:a", "--mlx-resolutions", "224x224", "--mlx-rounds", "2"]
    quiet = fake.runpytest(*run)
    quiet.assert_outcomes(passed=1)
    assert "benchmark 'fake:a'" not in quiet.stdout.str()
    asked = fake.runpytest(*run, "--mlx-pytest-benchmark")
    asked.assert_outcomes(passed=1)
    asked.stdout.fnmatch_lines(["*benchmark 'fake:a': 1 tests*"])
    fake.makeini("[pytest]\naddopts = --benchmark-columns=min,max\n")  # a --benchmark-* option asks too
    fake.runpytest(*run).stdout.fnmatch_lines(["*benchmark 'fake:a': 1 tests*"])
    # --benchmark-cprofile calls the target once more, under cProfile: not a measured round
    profiled = fake.runpytest(*run, "--benchmark-cprofile=tottime", "--mlx-json", "out.json")
    profiled.assert_outcomes(passed=1)
    assert len(json.loads((fake.path / "out.json").read_text())["results"][0]["samples"]) == 2


def test_without_pytest_benchmark_nothing_of_it_shows(fake: pytest.Pytester):
    """As where it is not installed (it is an extra now): no banner, no table, no .benchmarks/."""
    run = ["--mlx-model", "fake:a", "--mlx-resolutions", "224x224", "--mlx-rounds", "2", "-p", "no:benchmark"]
    result = fake.runpytest(*run)
    result.assert_outcomes(passed=1)
    assert not any(line.startswith("benchmark:") for line in result.stdout.lines)
    assert not (fake.path / ".benchmarks").exists()
    asked = fake.runpytest(*run, "--mlx-pytest-benchmark")
    assert asked.ret == pytest.ExitCode.USAGE_ERROR
    asked.stderr.fnmatch_lines(["*--mlx-pytest-benchmark needs pytest-benchmark: pip install 'pytest-mlxvlm[[]benchmark[]]'*"])


def test_pytest_benchmark_is_an_extra_not_a_dependency():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11 and newer")
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("pytest-benchmark") for d in project["dependencies"])
    extras = project["optional-dependencies"]
    assert extras["benchmark"] == ["pytest-benchmark>=5"] and "pytest-benchmark>=5" in extras["dev"]


def test_pytest_benchmark_receives_the_measurements(fake: pytest.Pytester):
    result = fake.runpytest("--mlx-model", "fake:a", "--mlx-resolutions", "224x224",
                            "--mlx-rounds", "4", "--benchmark-json", "bench.json")
    result.assert_outcomes(passed=1)
    doc = json.loads((fake.path / "bench.json").read_text())
    assert doc["machine_info"]["mlx"] == machine.identity()  # the chip identity, whatever it is
    assert doc["machine_info"]["mlx"]["backend"] in ("metal", "cuda", "cpu")
    (bench,) = doc["benchmarks"]
    assert bench["group"] == "fake:a"
    assert bench["stats"]["rounds"] == 4
    assert bench["stats"]["median"] > 0  # pytest-benchmark's own clock around each generation
    # the fake engine's exact figures: ttft 0.091050176 s, then 63 tokens at 100 tok/s
    assert bench["extra_info"]["mlxvlm_end_to_end_tps"] == pytest.approx(64 / 0.721050176)
    assert bench["extra_info"]["mlxvlm_image_tokens"] == 64


def test_chip_override_reaches_json(fake: pytest.Pytester):
    fake.runpytest("--mlx-model", "fake:a", "--mlx-resolutions", "224x224", "--mlx-rounds", "1",
                   "--mlx-chip", "Apple M4 Max 128GB", "--mlx-json", "o.json")
    doc = json.loads((fake.path / "o.json").read_text())
    assert doc["machine"]["key"] == "apple-m4-max-128gb"


def test_junit_properties(fake: pytest.Pytester):
    fake.runpytest("--mlx-model", "fake:a", "--mlx-resolutions", "224x224", "--mlx-rounds", "1",
                   "--junitxml", "j.xml")
    xml = (fake.path / "j.xml").read_text()
    assert 'name="mlxvlm:224x224:end_to_end_tps"' in xml
    assert 'name="mlxvlm:224x224:baseline" value="new"' in xml


ORDINARY_TESTS = """
import time

import pytest

@pytest.mark.parametrize("i", range(6))
def test_ordinary(i):
    time.sleep(0.2)
    assert i >= 0
"""


def test_xdist_measured_tests_share_one_worker_and_results_merge(fake: pytest.Pytester):
    """-n 2: ordinary tests spread over both workers, measured ones on one; one set of reports."""
    fake.makepyfile(test_ordinary=ORDINARY_TESTS)
    args = ["--mlx-model", "fake:a", "--quick", "--mlx-rounds", "2", "-n", "2", "-v",
            "-p", "no:randomly", "--mlx-json", "o.json", "--mlx-markdown", "o.md",
            "--mlx-history", "h.jsonl", "--mlx-baseline-dir", "bl", "--mlx-chip", "ci"]
    result = fake.runpytest(*args, "--mlx-update-baselines")
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines(["*mlxvlm: tests that use mlx_model run on one pytest-xdist worker*"])
    assert "Benchmark fixture was not used" not in result.stdout.str()
    result.stdout.fnmatch_lines([  # progress lines from the workers' reports, in the controller
        "mlxvlm: [[]1/4[]] fake:a 224x224: Speed 88.* tok/s, TTFT 91 ms, Decode 100.0 tok/s; * so far, ~* left",
        "mlxvlm: [[]4/4[]] fake:a 1024x1024: Speed * tok/s, TTFT * ms, Decode 100.0 tok/s; * so far, done",
    ], consecutive=False)
    workers: dict[str, set[str]] = {"measured": set(), "ordinary": set()}
    for line in result.stdout.lines:
        if line.startswith("[gw") and "PASSED" in line:
            kind = "measured" if "test_image_generation" in line else "ordinary"
            workers[kind].add(line.split("]")[0])
    assert len(workers["measured"]) == 1, workers
    assert len(workers["ordinary"] | workers["measured"]) == 2, workers
    doc = json.loads((fake.path / "o.json").read_text())
    assert [r["resolution"] for r in doc["results"]] == ["224x224", "448x448", "768x768", "1024x1024"]
    assert all(len(r["samples"]) == 2 and r["outcome"] == "passed" for r in doc["results"])
    assert doc["load_times_s"] and "fake:a" in doc["load_times_s"]
    result.stdout.fnmatch_lines(["*mlxvlm: fake:a on *", "| Resolution *",
                                 "*4 baseline case(s) written to*ci*fake-a.json*"], consecutive=False)
    assert "test_image_generation[1024x1024]`" in (fake.path / "o.md").read_text()
    history = [json.loads(line) for line in (fake.path / "h.jsonl").read_text().splitlines()]
    assert len(history) == 1 and len(history[0]["cases"]) == 4
    # the merged results are gated on the worker, against the baselines the controller wrote
    again = fake.runpytest(*args[:-4], "--mlx-baseline-dir", "bl", "--mlx-chip", "ci")
    again.assert_outcomes(passed=10)
    again.stdout.fnmatch_lines(["*mlxvlm baselines (ci): 4 compared, 0 regressed*"])


MEASURED_TESTS = """
import json, os, time

import pytest

@pytest.mark.parametrize("i", range(4))
def test_measured(mlx_bench, i):
    start = time.time()
    mlx_bench.run()
    with open("intervals.jsonl", "a") as fh:
        fh.write(json.dumps([os.environ["PYTEST_XDIST_WORKER"], start, time.time()]) + "\\n")
"""


def test_xdist_other_dist_modes_still_measure_one_at_a_time(fake: pytest.Pytester):
    fake.makepyfile(test_ordinary=ORDINARY_TESTS, test_measured=MEASURED_TESTS)
    result = fake.runpytest("--mlx-model", "fake:a", "--mlx-resolutions", "224x224",
                            "--mlx-rounds", "3", "-n", "2", "--dist", "worksteal",
                            "--mlx-suite", "off", "--mlx-json", "o.json")
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines(["*with --dist worksteal, measured tests run one at a time*"])
    intervals = sorted(json.loads(line)[1:] for line in
                       (fake.path / "intervals.jsonl").read_text().splitlines())
    assert len(intervals) == 4
    assert all(a[1] <= b[0] for a, b in zip(intervals, intervals[1:])), intervals
    assert len(json.loads((fake.path / "o.json").read_text())["results"]) == 4


def test_xdist_gate_failure_is_reported_once_by_the_controller(fake: pytest.Pytester, monkeypatch):
    args = ["--mlx-model", "fake:a", "--mlx-resolutions", "224x224,448x448", "--mlx-rounds", "5",
            "-n", "2", "--mlx-baseline-dir", "bl", "--mlx-chip", "ci", "--mlx-strict-baselines"]
    fake.runpytest(*args, "--mlx-update-baselines").assert_outcomes(passed=2)
    before = (fake.path / "bl" / "ci" / "fake-a.json").read_bytes()
    monkeypatch.setenv("FAKE_MLX_SLOWDOWN", "1.5")
    result = fake.runpytest(*args, "--mlx-json", "o.json")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*mlxvlm: regression in *test_image_generation[[]224x224]*",
                                 "*mlxvlm baselines (ci): 2 compared, 2 regressed*"], consecutive=False)
    doc = json.loads((fake.path / "o.json").read_text())
    assert {r["comparison"]["status"] for r in doc["results"]} == {"regressed"}
    assert (fake.path / "bl" / "ci" / "fake-a.json").read_bytes() == before


def test_progress_line_per_case_in_verbose_mode(fake: pytest.Pytester):
    result = fake.runpytest("--mlx-model", "fake:a", "--quick", "--mlx-rounds", "1", "-v")
    result.stdout.fnmatch_lines([
        "mlxvlm: [[]1/4[]] fake:a 224x224: Speed 88.* tok/s, TTFT 91 ms, Decode 100.0 tok/s; * so far, ~* left",
        "mlxvlm: [[]4/4[]] fake:a 1024x1024: Speed * tok/s, TTFT * ms, Decode 100.0 tok/s; * so far, done",
    ], consecutive=False)
    quiet = fake.runpytest("--mlx-model", "fake:a", "--quick", "--mlx-rounds", "1")
    assert "so far" not in quiet.stdout.str()  # a short session: no progress lines without -v


def test_xdist_scheduling_of_other_projects_is_left_alone(pytester: pytest.Pytester):
    """Installed but not measuring (no model, no suite): xdist schedules as it would without us."""
    pytester.makepyfile(test_ordinary=ORDINARY_TESTS)
    result = pytester.runpytest("-n", "2", "-v")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["scheduling tests via LoadScheduling"])
    assert "pytest-xdist worker" not in result.stdout.str()


def test_an_empty_resolution_list_is_refused(fake: pytest.Pytester):
    result = fake.runpytest("--mlx-model", "fake:a", "--mlx-resolutions", "")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest-mlxvlm: no resolution given: write e.g. --mlx-resolutions*"])


def test_dist_each_is_refused_for_measured_sessions(fake: pytest.Pytester):
    result = fake.runpytest("--mlx-model", "fake:a", "-n", "2", "--dist", "each")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--dist each would measure every case on every worker*"])
    fake.makepyfile(test_plain="def test_plain():\n    pass\n")
    fake.runpytest("-n", "2", "--dist", "each", "test_plain.py").assert_outcomes(passed=2)  # not measuring


@pytest.mark.parametrize("phase", ["prefill", "decode_step", "tail"])
def test_the_fake_engines_added_work_lands_in_every_phase_it_names(phase):
    from pytest_mlxvlm.measure.fake import FakeEngine, fake_profile
    from pytest_mlxvlm.models.loading import LoadedModel
    from pytest_mlxvlm.results import GenerationRequest

    model = LoadedModel(spec="fake:x", path=None, model=None, processor=None, load_time_s=0)
    sample = FakeEngine().pytest_mlxvlm_measure(model, GenerationRequest(image=None, prompt="hi", max_tokens=8))
    plain, extra = fake_profile("fake:x", sample), fake_profile("fake:x", sample, f"{phase}:Multiply=5")
    assert extra["hash"] != plain["hash"]
    assert extra["phases"][phase]["primitives"].get("Multiply", 0) == plain["phases"][phase]["primitives"].get(
        "Multiply", 0) + 5


def test_an_error_in_teardown_is_the_cases_outcome_too(fake: pytest.Pytester):
    """pytest says "1 passed, 1 error": the case in the JSON report did not pass either."""
    fake.makepyfile(test_td="""
        import pytest

        @pytest.fixture
        def broken():
            yield
            raise RuntimeError("teardown")

        def test_mine(mlx_bench, broken):
            mlx_bench.run()
    """)
    result = fake.runpytest("--mlx-model", "fake:a", "--mlx-resolutions", "224x224", "--mlx-rounds", "2",
                            "--mlx-json", "out.json")
    result.assert_outcomes(passed=1, errors=1)
    assert [r["outcome"] for r in json.loads((fake.path / "out.json").read_text())["results"]] == ["failed"]
