"""pytester sessions on the fake engine: exact numbers, no MLX work."""

import json

import pytest

from pytest_mlxvlm import machine
from pytest_mlxvlm.testing import CONFTEST


def test_help_lists_every_option_with_its_ini_name(pytester: pytest.Pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines([
        "VLM inference benchmarks on MLX (pytest-mlxvlm):",
        "  --mlx-model=MODEL *",
        "  --quick *",
        "  --mlx-resolutions=WxH,...",
        "  --mlx-max-tokens=N *",
        "  --mlx-rounds=N|auto *",
        "  --mlx-warmup=N *",
        "  --mlx-prompt=TEXT *",
        "  --mlx-image=PATH *",
        "  --mlx-json=PATH *",
        "  --mlx-chip=KEY *",
        "  --mlx-suite=*",
    ], consecutive=False)
    text = " ".join(result.stdout.str().split())
    for ini in ("mlx_model", "mlx_quick", "mlx_resolutions", "mlx_max_tokens", "mlx_rounds",
                "mlx_warmup", "mlx_prompt", "mlx_image", "mlx_json", "mlx_chip", "mlx_suite"):
        assert f"[ini: {ini}]" in text
        assert f"{ini} (" in text  # listed among the ini settings too


def test_header(fake: pytest.Pytester):
    result = fake.runpytest("--mlx-model", "fake:a", "--quick", "--co")
    result.stdout.fnmatch_lines([
        "mlxvlm: models fake:a; 4 resolutions (224x224, 448x448, 768x768, 1024x1024)",
        "mlxvlm: 5 rounds after 1 warmup, 64 tokens each",
    ])


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
        "mlxvlm: fake:a 224x224: 88.* tok/s, TTFT 91 ms, decode 100.0 tok/s [[]1/4, ~*s left[]]",
        "mlxvlm: fake:a 1024x1024: * tok/s, TTFT * ms, decode 100.0 tok/s [[]4/4, ~0s left[]]",
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
        "mlxvlm: fake:a 224x224: 88.* tok/s, TTFT 91 ms, decode 100.0 tok/s [[]1/4, ~*s left[]]",
        "mlxvlm: fake:a 1024x1024: * tok/s, TTFT * ms, decode 100.0 tok/s [[]4/4, ~0s left[]]",
    ], consecutive=False)
    quiet = fake.runpytest("--mlx-model", "fake:a", "--quick", "--mlx-rounds", "1")
    assert "left]" not in quiet.stdout.str()


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
