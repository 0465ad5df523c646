"""End-to-end pytest sessions on the real synthetic:tiny model (mlx-vlm on MLX)."""

import json
import shutil
from pathlib import Path

import pytest

from pytest_mlxvlm.common import machine
from pytest_mlxvlm.models import synthetic

BACKENDS = ("metal", "cuda", "cpu")

SMALL = ["--mlx-rounds", "2", "--mlx-warmup", "1", "--mlx-max-tokens", "6", "-p", "no:benchmark"]


@pytest.mark.slow
def test_quick_table_and_json_report(pytester: pytest.Pytester):
    result = pytester.runpytest(
        "--mlx-model", "synthetic:tiny", "--mlx-resolutions", "224x224,448x448",
        "--mlx-json", "out.json", *SMALL,
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "test_mlxvlm_images.py ..*",  # a progress line may follow the dots (a long session)
        f"*mlxvlm: synthetic:tiny on * ({machine.identity()['backend']})*",
        "| Resolution | Pixels | Time * | Tokens | Speed * | TTFT * | Prefill * | Decode * | Image tok | Peak mem | Spread * |",
        "| 224x224 * | 50K * | 6 * | * tok/s | * | 64 * |",
        "| 448x448 * | 201K * | 6 * | * tok/s | * | 196 * |",
        "Average * tok/s across 2 resolutions; fastest *, slowest *",
        "Aggregate: 2 configs, *s total, 12 tokens, * tok/s; model loaded in *s",
        "*JSON report written to *out.json*",
    ])
    doc = json.loads((pytester.path / "out.json").read_text())
    assert doc["settings"]["max_tokens"] == 6 and doc["settings"]["rounds"] == 2
    assert doc["machine"] == machine.identity()  # whatever this machine is
    assert doc["machine"]["backend"] in BACKENDS and doc["machine"]["key"]
    assert doc["machine"]["mlx"] == machine.detect()["mlx"]
    by_res = {r["resolution"]: r for r in doc["results"]}
    # Qwen3-VL: 224² is upscaled to 256² -> 64 image tokens; 448² -> 196; the prompt adds 26.
    for res, image_tokens in (("224x224", 64), ("448x448", 196)):
        case = by_res[res]
        assert case["outcome"] == "passed"
        assert len(case["samples"]) == 2 and len(case["warmup_samples"]) == 1
        for s in case["samples"]:
            assert s["image_tokens"] == image_tokens
            assert s["prompt_tokens"] == image_tokens + 26
            assert s["generation_tokens"] == 6
            assert s["cached_tokens"] == 0
            assert 0 < s["preprocess_s"] < s["ttft_s"] < s["time_s"]
            assert s["prefill_s"] < s["ttft_s"]
            assert s["end_to_end_tps"] == pytest.approx(6 / s["time_s"])
            # Decode times the 5 tokens after the first: a span inside the time after the first token
            assert s["end_to_end_tps"] > 0 and 0 < 5 / s["generation_tps"] <= s["time_s"] - s["ttft_s"] + 1e-6
            assert s["prompt_tps"] == pytest.approx(s["prompt_tokens"] / s["prefill_s"])
            assert s["peak_memory"] > 0
        assert case["summary"]["generation_tokens"]["median"] == 6
    assert doc["load_times_s"]["synthetic:tiny"] > 0
    assert doc["models"]["synthetic:tiny"]["aggregate"]["configs"] == 2


@pytest.mark.slow
def test_real_model_under_xdist(pytester: pytest.Pytester):
    """-n 2 on the real engine: the model loads on one worker, the controller reports."""
    pytester.makepyfile(test_plain="def test_a():\n    assert 1\n\ndef test_b():\n    assert 2\n")
    result = pytester.runpytest(
        "--mlx-model", "synthetic:tiny", "--mlx-resolutions", "224x224,448x448",
        "--mlx-json", "out.json", "-n", "2", *SMALL,
    )
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*mlxvlm: synthetic:tiny on * (*)*", "| 224x224 * | 64 * |"],
                                consecutive=False)
    doc = json.loads((pytester.path / "out.json").read_text())
    tokens = {r["resolution"]: r["summary"]["prompt_tokens"]["median"] for r in doc["results"]}
    assert tokens == {"224x224": 90, "448x448": 222}
    assert list(doc["load_times_s"]) == ["synthetic:tiny"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mlx-resolutions", "0x5"], "*pytest-mlxvlm: bad resolution '0x5'*between 1 and*"),
        (["--mlx-resolutions", "abc"], "*pytest-mlxvlm: bad resolution 'abc': write WIDTHxHEIGHT*"),
        (["--mlx-max-tokens", "0"], "*pytest-mlxvlm: --mlx-max-tokens must be between 1 and 1000000, got 0*"),
        (["--mlx-rounds", "two"], "*pytest-mlxvlm: --mlx-rounds must be a whole number*"),
        (["--mlx-image", "nope.png"], "*pytest-mlxvlm: --mlx-image 'nope.png': no such file*"),
    ],
)
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, args, message):
    result = pytester.runpytest("--mlx-model", "synthetic:tiny", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def _broken_models(tmp: Path) -> dict[str, str]:
    good = synthetic.ensure_built(synthetic.parse("synthetic:tiny"))
    unsupported = tmp / "unsupported"
    unsupported.mkdir()
    (unsupported / "config.json").write_text(json.dumps({"model_type": "no_such_arch"}))
    corrupt = tmp / "corrupt"
    shutil.copytree(good, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00\x01 not safetensors")
    return {
        "mlx-community/Not-A-Real-Model-4bit": "*not in the local Hugging Face cache*huggingface-cli download*",
        str(tmp / "missing-dir"): "*is not a directory; pass a folder that holds config.json*",
        str(unsupported): "*model type 'no_such_arch' is not supported by mlx-vlm*",
        str(corrupt): "*could not be loaded from *corrupt*",
        "synthetic:qwen9": "*unknown synthetic model 'synthetic:qwen9'; choose one of*",
    }


@pytest.mark.slow
def test_unloadable_models_fail_alone_and_other_results_are_kept(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    broken = _broken_models(pytester.path)
    args = []
    for spec in [*broken, "synthetic:tiny"]:
        args += ["--mlx-model", spec]
    result = pytester.runpytest(
        *args, "--mlx-resolutions", "224x224", "--mlx-json", "out.json", *SMALL
    )
    result.assert_outcomes(passed=1, errors=len(broken))
    result.stdout.fnmatch_lines(list(broken.values()), consecutive=False)
    doc = json.loads((pytester.path / "out.json").read_text())
    assert [r["model"] for r in doc["results"]] == ["synthetic:tiny"]
    assert set(doc["errors"]) == set(broken)
    for message in doc["errors"].values():
        assert "\n" not in message


@pytest.mark.slow
def test_users_own_benchmark_test_with_marker_and_fixtures(pytester: pytest.Pytester):
    pytester.makepyfile(
        test_mine="""
        import pytest

        @pytest.mark.mlx_benchmark(rounds=3, max_tokens=4, warmup=0, resolutions=["224x224", "336x336"])
        def test_mine(mlx_bench, mlx_model, mlx_resolution, mlx_image, mlx_settings, mlx_machine):
            result = mlx_bench.run()
            assert mlx_model.spec == "synthetic:tiny" and mlx_model.load_time_s > 0
            assert mlx_image.name == f"synthetic-{mlx_resolution.id}.png"
            assert [s.generation_tokens for s in result.samples] == [4, 4, 4]
            assert result.warmup == []
            assert mlx_machine["backend"] in ("metal", "cuda", "cpu") and mlx_machine["key"]

        def test_text_only(mlx_bench):
            result = mlx_bench.run(image=None, prompt="Hello", rounds=1, warmup=0, max_tokens=3)
            assert result.samples[0].image_tokens == 0
        """
    )
    result = pytester.runpytest("-v", "-p", "no:benchmark", "--mlx-resolutions", "224x224")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "*test_mine[[]tiny-224x224[]] PASSED*",
        "*test_mine[[]tiny-336x336[]] PASSED*",
        "*test_text_only[[]tiny-224x224[]] PASSED*",
    ])
    # no --mlx-model on the command line: the built-in suite does not run
    assert "test_mlxvlm_images" not in result.stdout.str()


def test_users_own_image_is_resized(pytester: pytest.Pytester):
    from PIL import Image

    Image.new("RGB", (50, 40), (200, 10, 10)).save(pytester.path / "red.png")
    (pytester.path / "broken.png").write_bytes(b"not a png")
    pytester.makepyfile(
        test_img="""
        from PIL import Image

        def test_img(mlx_image, mlx_resolution):
            with Image.open(mlx_image) as img:
                assert img.size == (mlx_resolution.width, mlx_resolution.height)
                assert img.getpixel((5, 5)) == (200, 10, 10)
        """
    )
    result = pytester.runpytest("--mlx-image", "red.png", "--mlx-resolutions", "64x48")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest("--mlx-image", "broken.png", "--mlx-resolutions", "64x48")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*cannot open image '*broken.png': not an image format PIL can read"])
    assert "During handling" not in result.stdout.str()


INJECT_MLP = '''
import os

import mlx.nn as nn
import pytest


class Twice(nn.Module):
    """The first decoder layer's MLP computed twice (the second kept in the graph)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def __call__(self, x):
        return self.inner(x) + 0 * self.inner(x)


@pytest.hookimpl(wrapper=True)
def pytest_mlxvlm_load_model(spec, settings):
    loaded = yield
    if loaded is not None and os.environ.get("INJECT_MLP_TWICE"):
        layer = loaded.model.language_model.model.layers[0]
        layer.mlp = Twice(layer.mlp)
    return loaded
'''


@pytest.mark.slow
def test_work_profile_of_a_real_model_is_exact_in_process_and_in_a_worker(pytester, monkeypatch):
    pytester.makeconftest(INJECT_MLP)
    args = ["--mlx-model", "synthetic:tiny", "--mlx-resolutions", "224x224", "--mlx-rounds", "1",
            "--mlx-warmup", "1", "--mlx-max-tokens", "8", "-p", "no:benchmark", "-p", "no:cacheprovider"]
    pytester.runpytest(*args, "--mlx-update-baselines").assert_outcomes(passed=1)
    stored = json.loads(next((pytester.path / "baselines").rglob("synthetic-tiny.json")).read_text())
    work = next(iter(stored["cases"].values()))["work"]
    assert work["key"]["mlx"] == machine.detect()["mlx"] and work["tokens"] == 8
    assert work["phases"]["decode_step"]["primitives"].get("Matmul", 0) > 0
    assert work["phases"]["decode_step"]["async_evals"] >= 1
    # a new process, and a worker process: the same work, counted exactly
    for extra in ([], ["--mlx-isolate"]):
        result = pytester.runpytest(*args, *extra, "--mlx-json", "out.json")
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(["mlxvlm work profile against the baseline (exact): 1 same work"])
        doc = json.loads((pytester.path / "out.json").read_text())
        assert doc["results"][0]["work"]["hash"] == work["hash"]
    # the first layer's MLP computed twice: more matrix products in every decode step
    monkeypatch.setenv("INJECT_MLP_TWICE", "1")
    result = pytester.runpytest(*args, "--mlx-json", "out.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*mlxvlm: work regressed in *: *Matmul* per decode step*"])
    diff = json.loads((pytester.path / "out.json").read_text())["results"][0]["work_check"]["diff"]
    assert diff["phases"]["decode_step"]["primitives"]["Matmul"] > 0
