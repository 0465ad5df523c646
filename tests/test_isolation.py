"""Crash-isolated cases (--mlx-isolate) and inputs refused before they can crash MLX."""

import json
from pathlib import Path

import pytest

ISOLATED = ["--mlx-model", "fake:m", "--mlx-isolate", "--mlx-resolutions", "224x224,336x336,448x448",
            "--mlx-rounds", "3", "--mlx-warmup", "0", "-p", "no:cacheprovider"]


def test_a_case_that_kills_the_interpreter_fails_alone(pytester):
    # the worker aborts (SIGABRT, as MLX does on a fatal error) at its 6th generation (3 rounds
    # and the work profile's round a case): its first measured round of 336x336; 448x448 gets a fresh worker and passes
    pytester.makepyfile(fake_mlx_speed="CRASH_AT = 6\n")
    result = pytester.runpytest(*ISOLATED, "--mlx-json", "r.json", "--mlx-history", "h.jsonl")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*336x336*measuring worker died during 'measure' (*SIGABRT*); last output:*",
        "*history session appended to *h.jsonl*",
        "*JSON report written to *r.json*",
    ])
    doc = json.loads((pytester.path / "r.json").read_text())
    assert {r["resolution"]: r["outcome"] for r in doc["results"]} == {"224x224": "passed",
                                                                       "448x448": "passed"}
    assert len((pytester.path / "h.jsonl").read_text().splitlines()) == 1
    # the worker's log is kept in the session's own temporary folder, and the summary says where
    logs = pytester.path.parent / "basetemp" / "mlxvlm-logs"  # pytester's --basetemp
    result.stdout.fnmatch_lines([f"mlxvlm: the logs of this session's workers and servers are kept in {logs}"])
    assert [p.name.startswith("mlxvlm-measuring-worker-") for p in logs.iterdir()] == [True]


def test_a_hung_generation_is_stopped(pytester):
    pytester.makepyfile(fake_mlx_speed="HANG_AT = 2\n")
    # 5 s, not less: the timeout also bounds the fresh worker's imports and load on a loaded machine
    result = pytester.runpytest(*ISOLATED, "--mlx-worker-timeout", "5")
    result.stdout.fnmatch_lines(["*measuring worker did not answer 'measure' within 5 s and was stopped*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_the_bandwidth_bound_comes_from_the_worker(pytester):
    # no model in this process: the worker reports what decode reads per token when it loads
    pytester.makepyfile(fake_mlx_speed="WEIGHT_BYTES = 10**9\nKV_BYTES_PER_POSITION = 1000\n")
    result = pytester.runpytest(*ISOLATED, "--mlx-bandwidth", "50", "--mlx-json", "r.json")
    result.assert_outcomes(passed=3)
    assert not (pytester.path.parent / "basetemp" / "mlxvlm-logs").exists()  # a clean session's logs go
    assert "logs of this session" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*| % of BW limit (tok/s) |", "*| 224x224 *| 200% of 50 *|",
                                 "Bandwidth limit of decode: 50 GB/s *"])
    doc = json.loads((pytester.path / "r.json").read_text())
    summary = doc["results"][0]["summary"]
    context = summary["prompt_tokens"]["median"] + summary["generation_tokens"]["median"] / 2
    assert doc["results"][0]["bandwidth"]["bytes_per_token"] == 10**9 + 1000 * context


def test_the_cache_suite_says_why_it_does_not_run_isolated(pytester):
    result = pytester.runpytest("--mlx-model", "fake:m", "--mlx-isolate", "--mlx-suite", "cache",
                                "-p", "no:cacheprovider", "-rs")
    result.stdout.fnmatch_lines(["*does not run with --mlx-ab-* or --mlx-isolate*"])


@pytest.mark.slow
def test_real_model_in_a_worker(pytester):
    result = pytester.runpytest("--mlx-model", "synthetic:tiny", "--mlx-isolate", "--mlx-resolutions",
                                "224x224", "--mlx-rounds", "2", "--mlx-max-tokens", "8",
                                "--mlx-bandwidth", "100", "--mlx-json", "r.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*| % of BW limit (tok/s) |", "*| 224x224 *| 8 *| 64 *| *% of * *|"])
    # the bound the worker's bytes give is the one this process computes from the same model
    from pytest_mlxvlm.common.bandwidth import decode_limit, decode_weight_bytes, kv_bytes_per_position
    from pytest_mlxvlm.models import loading as models

    model = models.load("synthetic:tiny").model
    case = json.loads((pytester.path / "r.json").read_text())["results"][0]
    tokens = [int(case["summary"][m]["median"]) for m in ("prompt_tokens", "generation_tokens")]
    expected = decode_limit(100, decode_weight_bytes(model), kv_bytes_per_position(model), *tokens)
    assert case["bandwidth"]["limit_tps"] == pytest.approx(expected["limit_tps"])
    assert case["bandwidth"]["fraction"] == pytest.approx(
        case["summary"]["generation_tps"]["median"] / expected["limit_tps"])


@pytest.mark.slow
def test_an_image_too_large_for_the_vision_encoder_is_refused_and_the_rest_is_kept(pytester):
    result = pytester.runpytest("--mlx-model", "synthetic:tiny", "--mlx-resolutions", "4096x4096,224x224",
                                "--mlx-rounds", "2", "--mlx-max-tokens", "8", "--mlx-json", "r.json",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*synthetic:tiny 4096x4096: 65536 vision patches: the vision encoder's attention would hold "
        "4.29e+09 scores (1 heads x 65536²), beyond the 2^31 elements MLX can index*",
    ])
    assert [r["resolution"] for r in json.loads((pytester.path / "r.json").read_text())["results"]] == ["224x224"]



@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_a_killed_session_leaves_no_worker(pytester, session_killer):
    pytester.makepyfile(fake_mlx_speed="HANG_AT = 1\n")  # the generation hangs: only a kill ends it
    workers = session_killer.kill([*ISOLATED, "--noconftest"], pytester.path, workers=1)
    assert session_killer.survivors(workers, within_s=10.0) == [], "a worker outlived its SIGKILLed session by 10 s"


def test_several_images_per_request_cross_to_the_worker(fake):
    """A list of images (paths and PIL images) is measured in a worker as in process: each PIL
    image saved to its own file, the request's image tokens those of both."""
    fake.makepyfile(test_two="""
        from PIL import Image

        def test_two_images(mlx_bench, mlx_image):
            mlx_bench.run(image=[mlx_image, Image.new("RGB", (448, 448))])
    """)
    tokens = {}
    for isolate in ([], ["--mlx-isolate"]):
        args = ["--mlx-model", "fake:m", "--mlx-resolutions", "224x224", "--mlx-rounds", "2", "--mlx-warmup", "0",
                "-p", "no:cacheprovider", "--mlx-suite", "off", "--mlx-json", "r.json", *isolate]
        fake.runpytest(*args).assert_outcomes(passed=1)
        (case,) = json.loads((fake.path / "r.json").read_text())["results"]
        tokens[bool(isolate)] = case["summary"]["image_tokens"]["median"]
    assert tokens[True] == tokens[False] == 64 + 196  # 224² and 448² in Qwen3-VL's 32-pixel cells
