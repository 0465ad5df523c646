"""Weightless twins: names, bad input, published shapes, image tokens, and (slow) every family
built small (``-tiny``: 2 layers of width 64, vocabulary and processors as published) and run."""

import json
import shutil
from pathlib import Path

import pytest

from pytest_mlxvlm.models import synthetic, twincheck, twins

FAMILY_TWINS = ["gemma3-4b", "gemma4-e2b", "qwen2.5-vl-3b", "qwen3-vl-30b-a3b", "smolvlm2-2.2b",
                "lfm2-vl-1.6b", "mistral3-24b"]


def test_names_parse_into_twin_recipes():
    r = synthetic.parse("synthetic:gemma3-4b-4bit")
    assert isinstance(r, twins.TwinRecipe) and (r.bits, r.tiny) == (4, False)
    r = synthetic.parse("synthetic:qwen3-vl-30b-a3b-tiny")
    assert r.tiny and r.quant is None and Path(r.folder).name == "qwen3-vl-30b-a3b"
    assert synthetic.parse("synthetic:mistral3-24b-bf16").quant == "bf16"
    assert synthetic.parse("synthetic:qwen3-vl-8b-4bit").shape == "qwen3-vl-8b"  # the old table
    assert "gemma3-12b-4bit" in synthetic.known_names() and "tiny" in synthetic.known_names()


@pytest.mark.parametrize("name, message", [
    ("synthetic:gemma3-4b-7bit", "2, 3, 4, 5, 6 or 8 bits"),
    ("synthetic:no-such-model", "unknown synthetic model"),
])
def test_bad_twin_names(name, message):
    with pytest.raises(synthetic.SyntheticModelError, match=message):
        synthetic.parse(name)


def test_cache_key_follows_the_files(tmp_path):
    folder = _copy_twin("qwen2.5-vl-3b", tmp_path / "a")
    key = twins.parse(str(folder)).cache_key
    assert key.startswith("twin-a-r") and key == twins.parse(str(folder)).cache_key
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    assert twins.parse(str(folder)).cache_key != key


def _copy_twin(name: str, folder: Path, tiny: bool = False) -> Path:
    """A config folder with no weights and no tokenizer, as a user would have."""
    shutil.copytree(twins.TWINS_DIR / name, folder)
    (folder / "twin.json").unlink()
    if tiny:
        config = json.loads((folder / "config.json").read_text())
        config = twins.merge(config, twins.families()[config["model_type"]]["tiny"])
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def _edit(folder: Path, file: str, path: str, value) -> None:
    data = json.loads((folder / file).read_text())
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    (folder / file).write_text(json.dumps(data))


@pytest.mark.parametrize("file, field, value, message", [
    ("config.json", "model_type", "no_such_vlm", r"config.json: field 'model_type' = 'no_such_vlm' is not a model type mlx-vlm"),
    ("config.json", "model_type", None, r"config.json: field 'model_type' is missing"),
    ("config.json", "text_config.hidden_size", None, r"config.json: field 'text_config.hidden_size' is missing"),
    ("config.json", "text_config.num_hidden_layers", -2, r"field 'text_config.num_hidden_layers' is -2, not a positive integer"),
    ("config.json", "vision_config", None, r"config.json: field 'vision_config' is missing"),
    ("config.json", "quantization", {"bits": 7, "group_size": 64}, r"config.json: field 'quantization'"),
    ("preprocessor_config.json", "image_seq_length", 128,
     r"preprocessor_config.json: field 'image_seq_length' = 128 disagrees with config.json 'mm_tokens_per_image' = 256"),
    ("preprocessor_config.json", "size.height", 448,
     r"preprocessor_config.json: field 'size.height' = 448 disagrees with config.json 'vision_config.image_size' = 896"),
])
def test_bad_config_folders_name_the_file_and_field(tmp_path, file, field, value, message):
    folder = _copy_twin("gemma3-4b", tmp_path / "g")
    _edit(folder, file, field, value)
    with pytest.raises(twins.TwinConfigError, match=message):
        twins.prepare(twins.parse(str(folder)))


@pytest.mark.parametrize("name, file, field, value, message", [
    ("qwen2.5-vl-3b", "preprocessor_config.json", "patch_size", 16,
     "field 'patch_size' = 16 disagrees with config.json 'vision_config.patch_size' = 14"),
    ("qwen2.5-vl-3b", "config.json", "hidden_size", None, "field 'hidden_size' is missing"),
    ("smolvlm2-2.2b", "processor_config.json", "image_seq_len", 64,
     "field 'image_seq_len' = 64 disagrees with config.json"),
    ("mistral3-24b", "processor_config.json", "spatial_merge_size", 1,
     "field 'spatial_merge_size' = 1 disagrees with config.json 'spatial_merge_size' = 2"),
    ("lfm2-vl-1.6b", "preprocessor_config.json", "encoder_patch_size", 14,
     "field 'encoder_patch_size' = 14 disagrees"),
])
def test_processor_configs_that_disagree_with_the_model(tmp_path, name, file, field, value, message):
    folder = _copy_twin(name, tmp_path / "m")
    _edit(folder, file, field, value)
    with pytest.raises(twins.TwinConfigError, match=message) as info:
        twins.prepare(twins.parse(str(folder)))
    assert str(folder / file) in str(info.value)


def test_missing_and_unreadable_files(tmp_path):
    folder = _copy_twin("lfm2-vl-1.6b", tmp_path / "l")
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(twins.TwinConfigError, match="preprocessor_config.json: missing"):
        twins.prepare(twins.parse(str(folder)))
    (folder / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(twins.TwinConfigError, match="preprocessor_config.json: not readable JSON"):
        twins.prepare(twins.parse(str(folder)))
    with pytest.raises(twins.TwinConfigError, match="no config.json"):
        twins.parse(str(tmp_path))


def test_a_bad_folder_errors_the_models_tests_with_the_reason(pytester, tmp_path):
    folder = _copy_twin("gemma3-4b", tmp_path / "bad")
    _edit(folder, "config.json", "text_config.vocab_size", None)
    result = pytester.runpytest("--mlx-model", f"synthetic:{folder}", "--mlx-resolutions", "224x224",
                                "-p", "no:benchmark")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*config.json: field 'text_config.vocab_size' is missing*"])


@pytest.mark.parametrize("name", twins.shipped_names())
def test_published_shapes_give_the_published_parameter_counts(name):
    """The twin's model (lazy: no weights drawn) has the parameters the model card states."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from pytest_mlxvlm.models.twinbuild import build_model

    files = twins.prepare(twins.parse(name))
    card = json.loads((twins.TWINS_DIR / name / "twin.json").read_text())
    if card.get("published_parameters") is None:
        pytest.skip(f"{name}: no published parameter count to compare (see its SOURCE.md)")
    model = build_model(files.config, "bfloat16", 0)
    params = dict(tree_flatten(model.parameters()))
    if files.config["model_type"] == "gemma3":  # mlx-vlm's head is the embedding, tied on load
        params.pop("language_model.lm_head.weight")
    count = sum(v.size for v in params.values())
    assert count == pytest.approx(card["published_parameters"], rel=0.005)
    del model, params
    mx.clear_cache()


# Image tokens of the published processors (rules in twincheck.published_image_tokens).
PUBLISHED_TOKENS = {
    "gemma3-4b": {(224, 224): 256, (448, 448): 256, (1280, 720): 256},
    "gemma4-e2b": {(224, 224): 256, (448, 448): 256, (1280, 720): 264, (720, 1280): 264},
    "qwen2.5-vl-3b": {(224, 224): 64, (448, 448): 256, (1280, 720): 46 * 26},
    "qwen3-vl-30b-a3b": {(224, 224): 64, (448, 448): 196, (1280, 720): 40 * 22},
    "mistral3-24b": {(224, 224): 64, (448, 448): 256, (1280, 720): 46 * 26},
    "lfm2-vl-1.6b": {(224, 224): 64, (448, 448): 196},
    "smolvlm2-2.2b": {(224, 224): 17 * 81, (1280, 720): 13 * 81},
}


@pytest.mark.parametrize("variant", ["", "-tiny"])
@pytest.mark.parametrize("name", sorted(PUBLISHED_TOKENS))
def test_image_token_rules(name, variant):
    """The published counts, and the same for the tiny twins (whose smaller image side keeps them)."""
    files = twins.prepare(twins.parse(name + variant))
    for (width, height), tokens in PUBLISHED_TOKENS[name].items():
        assert twincheck.published_image_tokens(files.config, files.processors, width, height) == tokens


def test_index_comparison():
    tensors = {"a.weight": {"dtype": "BF16", "shape": [4, 8], "nbytes": 64},
               "b.weight": {"dtype": "U32", "shape": [4, 1], "nbytes": 16}}
    same = {"metadata": {"total_size": 80}, "weight_map": {"a.weight": "m.safetensors", "b.weight": "m.safetensors"}}
    assert twincheck.compare_with_index(tensors, same) == []
    other = {"metadata": {"total_size": 96}, "weight_map": {"a.weight": "x", "c.weight": "x"}}
    problems = twincheck.compare_with_index(tensors, other)
    assert any("c.weight" in p for p in problems) and any("b.weight" in p for p in problems)
    assert any("total size 80 bytes" in p and "96" in p for p in problems)
    assert twincheck.parameter_count(tensors, bits=4) == 32 + 4 * 8


def test_a_twin_matches_a_published_safetensors_index():
    """gemma3-27b against the checkpoint's own model.safetensors.index.json (shipped beside its
    config): every tensor name, the tensor count, and total_size as bfloat16 (2 bytes each).
    The model is lazy: no weights are drawn."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from pytest_mlxvlm.models.twinbuild import build_model

    files = twins.prepare(twins.parse("gemma3-27b-bf16"))
    index = json.loads((twins.TWINS_DIR / "gemma3-27b" / twincheck.INDEX_FILE).read_text())
    params = dict(tree_flatten(build_model(files.config, files.dtype, 0).parameters()))
    params.pop("language_model.lm_head.weight")  # tied to the embedding: not stored
    tensors = {name: {"dtype": "BF16" if v.dtype == mx.bfloat16 else str(v.dtype),
                      "shape": list(v.shape), "nbytes": v.nbytes} for name, v in params.items()}
    assert len(tensors) == len(index["weight_map"]) == 1247
    assert twincheck.compare_with_index(tensors, index) == []
    assert {t["dtype"] for t in tensors.values()} == {"BF16"}
    del params
    mx.clear_cache()


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_TWINS)
def test_every_family_builds_and_gives_the_published_image_tokens(name, tmp_path, monkeypatch):
    """Each tiny twin builds, loads through mlx_vlm.load and generates; its processor gives the
    published image-token counts; its tensors match the index it was written with."""
    from PIL import Image

    from pytest_mlxvlm.measure.runner import measure_generation
    from pytest_mlxvlm.models import loading as models
    from pytest_mlxvlm.results import GenerationRequest

    monkeypatch.setenv("PYTEST_MLXVLM_CACHE", str(tmp_path))
    loaded = models.load(f"synthetic:{name}-tiny")
    files = twins.prepare(twins.parse(f"{name}-tiny"))
    image = tmp_path / "im.png"
    Image.new("RGB", (224, 224), (90, 120, 200)).save(image)
    sample = measure_generation(loaded.model, loaded.processor,
                                GenerationRequest(image=image, prompt="Describe this image.", max_tokens=3))
    assert sample.generation_tokens == 3
    assert sample.image_tokens == twincheck.published_image_tokens(files.config, files.processors, 224, 224)
    tensors = twincheck.read_tensor_headers(loaded.path)
    index = json.loads((loaded.path / twincheck.INDEX_FILE).read_text())
    assert twincheck.compare_with_index(tensors, index) == []


@pytest.mark.slow
def test_a_config_folder_gives_the_same_table_as_the_shipped_name(pytester, tmp_path):
    """A folder holding only config.json and the processor configs (no weights, no tokenizer)
    measures like the shipped twin: same cases, same image tokens."""
    folder = _copy_twin("qwen2.5-vl-3b", tmp_path / "Qwen2.5-VL-3B-configs", tiny=True)
    (tmp_path / "cache").mkdir()
    out = tmp_path / "out.json"
    result = pytester.runpytest(
        "--mlx-model", "synthetic:qwen2.5-vl-3b-tiny", "--mlx-model", f"synthetic:{folder}",
        "--mlx-resolutions", "224x224,448x448", "--mlx-rounds", "1", "--mlx-warmup", "0",
        "--mlx-max-tokens", "3", "--mlx-json", str(out), "-p", "no:benchmark")
    result.assert_outcomes(passed=4)
    report = json.loads(out.read_text())
    tokens: dict[str, dict[str, int]] = {}
    for case in report["results"]:
        tokens.setdefault(case["model"], {})[case["resolution"]] = case["samples"][0]["image_tokens"]
    assert len(tokens) == 2
    shipped, from_folder = tokens.values()
    assert shipped == from_folder and len(shipped) == 2


# The cache suite's core steps at the smallest images, in a session of its own.
CACHE_CORE = """
P1 = "Describe this image in detail."

def test_cache_core(mlx_cache, mlx_cache_image):
    a, b = mlx_cache_image(224, seed=1), mlx_cache_image(224, seed=2)
    mlx_cache.step("first", a, P1, "MISS", "image A: nothing cached yet")
    mlx_cache.step("repeat", a, P1, "HIT", "image A again")
    mlx_cache.step("other image", b, P1, "MISS", "image B, same size: the same placeholder tokens")
    mlx_cache.step("return", a, P1, "HIT", "back to image A")
    mlx_cache.check()
"""


@pytest.mark.slow
def test_the_cache_suite_runs_for_every_family(pytester, capsys):
    """Every family's tiny twin through every cache engine: each step a real generation with an
    outcome, or a clear reason (an engine that cannot hold the family's cache says so), never a
    traceback; nothing is cached before the first step. Prints the outcomes per family."""
    pytester.makepyfile(test_core=CACHE_CORE)
    models = [arg for name in FAMILY_TWINS for arg in ("--mlx-model", f"synthetic:{name}-tiny")]
    result = pytester.runpytest(*models, "--mlx-suite", "off", "--mlx-max-tokens", "2",
                                "--mlx-json", "out.json",
                                "-p", "no:benchmark")
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()
    assert "Traceback" not in result.stdout.str()
    records = json.loads((pytester.path / "out.json").read_text())["cache"]
    engines = {rec["engine"] for rec in records}
    assert {"apc", "prompt-cache"} <= engines
    assert len(records) == len(FAMILY_TWINS) * len(engines)
    lines = []
    for rec in records:
        steps = rec["steps"]
        assert [s["step"] for s in steps] == ["first", "repeat", "other image", "return"]
        for step in steps:
            assert step["outcome"] in ("HIT", "PARTIAL", "MISS", "ERROR")
            if step["error"]:
                assert "unsupported cache type" in step["error"], step["error"]
        first = steps[0]
        assert first["error"] or (first["outcome"] == "MISS" and first["correct"]), first
        lines.append(f"{rec['model']:32} {rec['engine']:13} " + ", ".join(
            f"{s['step']}: " + ("unsupported" if s["error"] else
                                s["outcome"] + ("" if s["correct"] is not False else " WRONG"))
            for s in steps))
    with capsys.disabled():
        print("\n" + "\n".join(lines))
