"""pytester sessions on the fake engine: exact numbers, no MLX work."""

import json

import pytest

CONFTEST = """
from pytest_mlxvlm.testing import FakeEngine

def pytest_configure(config):
    config.pluginmanager.register(FakeEngine(), "fake-engine")
"""


@pytest.fixture
def fake(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    return pytester


def test_help_lists_every_option_with_its_ini_name(pytester: pytest.Pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines([
        "VLM inference benchmarks on MLX (pytest-mlxvlm):",
        "  --mlx-model=MODEL *",
        "  --quick *",
        "  --mlx-resolutions=WxH,...",
        "  --mlx-max-tokens=N *",
        "  --mlx-rounds=N *",
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
    result.stdout.fnmatch_lines(["*test_marked: rounds must be at least 1, got 0*"])


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
    assert doc["machine_info"]["mlx"]["backend"] == "cpu"
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


def test_xdist_refuses_writes_it_cannot_merge_yet(fake: pytest.Pytester):
    result = fake.runpytest("--mlx-model", "fake:a", "-n", "2", "--mlx-update-baselines")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mlx-update-baselines cannot be used with pytest-xdist (-n) yet*"])


def test_progress_line_per_case_in_verbose_mode(fake: pytest.Pytester):
    result = fake.runpytest("--mlx-model", "fake:a", "--quick", "--mlx-rounds", "1", "-v")
    result.stdout.fnmatch_lines([
        "mlxvlm: fake:a 224x224: 88.* tok/s, TTFT 91 ms, decode 100.0 tok/s [[]1/4, ~*s left[]]",
        "mlxvlm: fake:a 1024x1024: * tok/s, TTFT * ms, decode 100.0 tok/s [[]4/4, ~0s left[]]",
    ], consecutive=False)
    quiet = fake.runpytest("--mlx-model", "fake:a", "--quick", "--mlx-rounds", "1")
    assert "left]" not in quiet.stdout.str()
