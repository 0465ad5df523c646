"""Prefix-cache checks through the real engines, and broken engines failing the right steps.

Tests that generate with synthetic:tiny are marked slow."""

import json

import pytest

from pytest_mlxvlm.suites.cache import CacheEngineError, Expectation, classify

BROKEN = """
from pytest_mlxvlm.testing import BrokenCacheEngines

def pytest_configure(config):
    config.pluginmanager.register(BrokenCacheEngines(), "broken-cache-engines")
"""
SUITE = ["--mlx-suite", "cache", "--mlx-model", "synthetic:tiny", "-p", "no:benchmark",
         "--mlx-json", "out.json"]


def _failed_steps(doc: dict) -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = {}
    for rec in doc["cache"]:
        test = rec["test"].rpartition("::")[2].split("[")[0]
        for step in rec["steps"]:
            out.setdefault(rec["engine"], set())
            if not step["passed"]:
                out[rec["engine"]].add((test, step["step"]))
    return out


def _wrong(doc: dict, engine: str) -> set[tuple[str, str]]:
    return {(rec["test"].rpartition("::")[2].split("[")[0], s["step"])
            for rec in doc["cache"] if rec["engine"] == engine
            for s in rec["steps"] if s["correct"] is False}


def _structure_holds(doc: dict, engines: set[str]) -> None:
    """What holds on any engine version: every step of every engine ran, was classified, and
    passed exactly when the engine did what was expected with the output of a cold run."""
    assert {rec["engine"] for rec in doc["cache"]} == engines
    for rec in doc["cache"]:
        for step in rec["steps"]:
            assert not step["error"], step
            assert step["outcome"] in ("HIT", "MISS", "PARTIAL") and 0 <= step["cached_tokens"] <= step["prompt_tokens"]
            if step["passed"]:
                assert step["correct"] is not False, step


def _documented_for(package: str, documented: str) -> None:
    """Skip (after the version-independent checks) where the installed engine is not the version
    whose exact behaviour docs/cache.md records."""
    from importlib.metadata import version

    installed = version(package)
    if installed != documented:
        pytest.skip(f"{package} {installed}: the exact HITs and wrong outputs asserted here are {package} "
                    f"{documented}'s (docs/cache.md); only the version-independent checks ran")


def test_classify():
    assert classify(0, 100, 16) == "MISS"
    assert classify(90, 100, 16) == "HIT" and classify(99, 100, 1) == "HIT"
    assert classify(50, 100, 16) == "PARTIAL"
    with pytest.raises(CacheEngineError):
        Expectation("MAYBE")


@pytest.mark.slow
def test_broken_engines_fail_the_right_steps_and_only_those(pytester: pytest.Pytester):
    pytester.makeconftest(BROKEN)
    result = pytester.runpytest(*SUITE, "-k", "basic", "--mlx-cache-engine",
                                "never-hit,always-hit,prompt-keyed")
    result.assert_outcomes(failed=3)
    doc = json.loads((pytester.path / "out.json").read_text())
    failed = _failed_steps(doc)
    basic = "test_cache_basic"
    assert failed["never-hit"] == {(basic, "repeat"), (basic, "return")}
    # (returning to image A reuses state whose image part is still A's: correct by accident)
    assert failed["always-hit"] == {(basic, "other prompt"), (basic, "other image")}
    assert failed["prompt-keyed"] == {(basic, "other image")}
    # answering from another image's state is caught by comparing with a cold run
    assert _wrong(doc, "prompt-keyed") == {(basic, "other image")}
    assert _wrong(doc, "always-hit") >= {(basic, "other image")}
    assert _wrong(doc, "never-hit") == set()
    result.stdout.fnmatch_lines([
        "*step 'repeat' (image A, prompt 1 again): expected HIT, got MISS - engine reported 0 of 126 "
        "prompt tokens cached*",
        "*step 'other image' (image B, prompt 1): expected MISS, got HIT - engine reported 125 of 126*"
        "WRONG OUTPUT: differs from a cold run of the same input*",
    ], consecutive=False)
    result.stdout.fnmatch_lines(["*mlxvlm cache: prompt-keyed on synthetic:tiny*",
                                 "| Step *| Description *| Expected | Actual *| Cached tokens | TTFT *|"
                                 " Speedup vs cold | Status *|"], consecutive=False)


@pytest.mark.slow
def test_real_engines_run_the_whole_suite(pytester: pytest.Pytester):
    """mlx-vlm's engines, as they really behave (see docs/cache.md): the exact outcomes are
    mlx-vlm 0.7.10's."""
    result = pytester.runpytest(*SUITE, "--mlx-cache-engine", "apc,prompt-cache")
    doc = json.loads((pytester.path / "out.json").read_text())
    _structure_holds(doc, {"apc", "prompt-cache"})
    _documented_for("mlx-vlm", "0.7.10")
    failed = _failed_steps(doc)
    assert set(failed) == {"apc", "prompt-cache"}
    hits = {("test_cache_basic", "repeat"), ("test_cache_basic", "return"),
            ("test_cache_different_images", "image 1 again"), ("test_cache_resolutions", "repeat"),
            ("test_cache_image_order", "[A, B] again")}
    # APC's block strategy drops any prefix that holds image tokens: never a HIT, never wrong
    assert failed["apc"] == hits
    assert _wrong(doc, "apc") == set()
    # PromptCacheState matches token ids only: it reuses one image's state for another image
    # of the same size (identical placeholder tokens), and never reuses an identical request
    assert _wrong(doc, "prompt-cache") == {
        ("test_cache_basic", "other image"), ("test_cache_same_size_images", "image B, other prompt")}
    assert failed["prompt-cache"] == hits | {
        ("test_cache_basic", "other prompt"), ("test_cache_basic", "other image"),
        ("test_cache_same_size_images", "image B, other prompt")}
    result.assert_outcomes(failed=15, passed=3)


@pytest.mark.slow
def test_vllm_mlx_engine_runs_the_whole_suite(pytester: pytest.Pytester):
    """vllm-mlx 0.6.0's MLLMPrefixCacheManager, its stored KV state reused in generation."""
    pytest.importorskip("vllm_mlx.mllm_cache", reason="./run.sh installs vllm-mlx (--no-deps)")
    result = pytester.runpytest(*SUITE)  # all engines: vllm-mlx is among them when installed
    doc = json.loads((pytester.path / "out.json").read_text())
    _structure_holds(doc, {"apc", "prompt-cache", "vllm-mlx"})
    _documented_for("vllm-mlx", "0.6.0")
    steps = [s for rec in doc["cache"] if rec["engine"] == "vllm-mlx" for s in rec["steps"]]
    # hits reuse all prompt tokens but the last, and answer as a cold run would
    hits = [s for s in steps if s["actual"] == "HIT" and s["passed"]]
    assert len(hits) == 8 and all(s["cached_tokens"] == s["prompt_tokens"] - 1 for s in hits)
    # the key sorts the images' hashes: [B, A] is served [A, B]'s state, with wrong output
    failed = _failed_steps(doc)
    assert failed["vllm-mlx"] == {("test_cache_image_order", "[B, A]")}
    assert _wrong(doc, "vllm-mlx") == {("test_cache_image_order", "[B, A]")}
    result.assert_outcomes(failed=16, passed=11)


@pytest.mark.slow
def test_expectations_are_data(pytester: pytest.Pytester):
    pytester.makeconftest(BROKEN + """
def pytest_mlxvlm_cache_expectations(engine, expectations):
    if engine == "never-hit" and "return" in expectations:
        expectations["return"] = "MISS"
""")
    pytester.makeini("[pytest]\nmlx_cache_expect =\n    never-hit: repeat = MISS\n")
    result = pytester.runpytest(*SUITE, "-k", "basic", "--mlx-cache-engine", "never-hit")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("engine, message", [
    ("nope", "*unknown cache engine 'nope'; choose from apc, prompt-cache or all*"),
    ("vllm-mlx", "*cache engine 'vllm-mlx' needs the vllm_mlx package: pip install --no-deps vllm-mlx*"),
])
def test_bad_engine_names(pytester: pytest.Pytester, monkeypatch, engine, message):
    monkeypatch.setattr("pytest_mlxvlm.suites.cache.vllm_mlx_available", lambda: False)
    result = pytester.runpytest(*SUITE, "--mlx-cache-engine", engine)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.slow
def test_an_engine_that_raises_fails_that_step_and_the_rest_still_run(pytester: pytest.Pytester):
    pytester.makeconftest("""
from dataclasses import dataclass

@dataclass
class Flaky:
    name: str = "flaky"
    description: str = "raises on its second request"
    slack: int = 1
    calls: int = 0

    def reset(self):
        pass

    def generate_kwargs(self, request, input_ids):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("cache store unavailable")
        return {}

def pytest_mlxvlm_cache_engines(config):
    return {"flaky": Flaky}
""")
    result = pytester.runpytest(*SUITE, "-k", "basic", "--mlx-cache-engine", "flaky")
    result.assert_outcomes(failed=1)
    doc = json.loads((pytester.path / "out.json").read_text())
    steps = doc["cache"][0]["steps"]
    assert len(steps) == 5
    assert steps[1]["error"] == "the engine raised RuntimeError: cache store unavailable"
    result.stdout.fnmatch_lines(["*step 'repeat' (image A, prompt 1 again): the engine raised "
                                 "RuntimeError: cache store unavailable*"])


@pytest.mark.slow
def test_run_then_expect_in_a_users_own_test(pytester: pytest.Pytester):
    pytester.makeconftest(BROKEN)
    pytester.makepyfile(test_mine="""
def test_repeat(mlx_cache, mlx_cache_image):
    a = mlx_cache_image(224, seed=1)
    first = mlx_cache.run(a, "Describe this image.")
    assert first.actual == "MISS" and first.cold_ttft_s > 0
    mlx_cache.expect(first, "MISS")
    again = mlx_cache.run(a, "Describe this image.", name="again")
    mlx_cache.expect(again, "HIT")
""")
    result = pytester.runpytest("--mlx-model", "synthetic:tiny", "--mlx-suite", "off", "-p", "no:benchmark",
                                "--mlx-cache-engine", "never-hit,prompt-keyed")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*step 'again' (again): expected HIT, got MISS - engine reported 0 of 88 prompt tokens cached*"])
    result.stdout.fnmatch_lines(["FAILED test_mine.py::test_repeat[[]tiny-never-hit[]]*"])
    result.stdout.fnmatch_lines(["| test_repeat: again * | HIT * | HIT * | 87/88 * | ok * |"])


@pytest.mark.slow
def test_an_image_that_cannot_be_opened_fails_its_step_naming_the_file(pytester: pytest.Pytester):
    pytester.makepyfile(test_bad="""
def test_bad(mlx_cache, mlx_cache_image, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    mlx_cache.step("broken", bad, "Describe.", "MISS")
    mlx_cache.step("fine", mlx_cache_image(224, seed=1), "Describe.", "MISS")
    mlx_cache.check()
""")
    result = pytester.runpytest("--mlx-model", "synthetic:tiny", "--mlx-suite", "off", "-p", "no:benchmark",
                                "--mlx-cache-engine", "apc")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "1 of 2 cache steps failed for engine 'apc':",
        "  step 'broken' (broken): the input could not be run (cold, without the engine): "
        "ValueError: Failed to load image from */broken.png: cannot identify image file*",
    ])


def _filled_kv(cache, tokens: int):
    import mlx.core as mx

    keys = mx.arange(tokens, dtype=mx.float32).reshape(1, 1, tokens, 1)
    cache.update_and_fetch(keys, keys + 100)
    return cache


def test_snapshot_kv_cuts_each_layer_back_with_its_own_trim():
    """Plain and sliding-window layers are copied and cut to the prefix; the copy is detached."""
    import mlx.core as mx
    from mlx_vlm.models.cache import KVCache, RotatingKVCache

    from pytest_mlxvlm.suites.cache import snapshot_kv

    layers = [_filled_kv(KVCache(), 6), _filled_kv(RotatingKVCache(max_size=64), 6)]
    snapshot = snapshot_kv(layers, 4)
    for copy, original in zip(snapshot, layers):
        keys, values = copy.state
        assert keys.shape[2] == 4 and keys[0, 0, :, 0].tolist() == [0, 1, 2, 3]
        assert values[0, 0, -1, 0].item() == 103
        copy.update_and_fetch(mx.full((1, 1, 1, 1), -1.0), mx.full((1, 1, 1, 1), -1.0))
        assert original.state[0][0, 0, :, 0].tolist() == [0, 1, 2, 3, 4, 5]


def test_snapshot_kv_names_a_cache_type_it_cannot_cut_back():
    """LFM2's conv layers keep one state (ArraysCache): a clear error, not an unpacking failure."""
    import mlx.core as mx
    from mlx_vlm.models.cache import ArraysCache, KVCache, RotatingKVCache

    from pytest_mlxvlm.suites.cache import snapshot_kv

    conv = ArraysCache(size=1)
    conv[0] = mx.zeros((1, 2, 8))
    with pytest.raises(CacheEngineError, match=r"unsupported cache type ArraysCache \(layer 0\)"):
        snapshot_kv([conv, _filled_kv(KVCache(), 6)], 5)
    assert len(snapshot_kv([conv, _filled_kv(KVCache(), 6)], 6)) == 2  # nothing to cut: a copy
    wrapped = _filled_kv(RotatingKVCache(max_size=4), 6)
    with pytest.raises(CacheEngineError, match=r"RotatingKVCache \(layer 0\)"):
        snapshot_kv([wrapped], 5)
