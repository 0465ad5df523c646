"""Model specs: names, file-name keys, where a spec points, and one-line errors for what cannot load.

None of these load weights: errors are raised before mlx-vlm is asked (loading itself is in
test_plugin_real.py, marked slow)."""

import json

import pytest

from pytest_mlxvlm.models import loading as models
from pytest_mlxvlm.models.loading import ModelLoadError, model_slug, short_name, source_kind


@pytest.mark.parametrize("spec, name", [
    ("mlx-community/Qwen3-VL-8B-Instruct-4bit", "Qwen3-VL-8B-Instruct-4bit"),
    ("synthetic:tiny", "tiny"),
    ("synthetic:qwen3-vl-8b-4bit", "qwen3-vl-8b-4bit"),
    ("./models/my-vlm/", "my-vlm"),
    ("/abs/path/ckpt", "ckpt"),
    ("fake:a", "fake:a"),
])
def test_short_name(spec, name):
    assert short_name(spec) == name


@pytest.mark.parametrize("spec, slug", [
    ("mlx-community/Qwen3-VL-8B-Instruct-4bit", "mlx-community--Qwen3-VL-8B-Instruct-4bit"),
    ("synthetic:tiny", "synthetic-tiny"),
    ("fake:a", "fake-a"),
    ("./models/my vlm/", "models--my_vlm"),
    ("/abs/path", "abs--path"),
    ("...", "model"),
])
def test_model_slug_is_a_file_name(spec, slug):
    assert model_slug(spec) == slug
    assert "/" not in model_slug(spec) and not model_slug(spec).startswith(".")


def test_slugs_of_different_specs_differ():
    specs = ["mlx-community/A-4bit", "mlx-community/A-3bit", "other/A-4bit", "synthetic:tiny",
             "synthetic:qwen3-vl-2b", "./A-4bit"]
    assert len({model_slug(s) for s in specs}) == len(specs)


def test_a_local_copy_under_the_hubs_org_and_name_shares_its_baseline_key():
    assert model_slug("../mlx-community/A-4bit") == model_slug("./mlx-community/A-4bit/") \
        == model_slug("mlx-community/A-4bit")


def test_source_kind(tmp_path):
    assert source_kind("synthetic:tiny") == "synthetic"
    assert source_kind("mlx-community/Qwen3-VL-8B-Instruct-4bit") == "hub"
    assert source_kind(str(tmp_path)) == "local"
    assert source_kind("./relative") == "local"
    assert source_kind("a/b/c") == "local"


@pytest.mark.parametrize("config", [{}, [], ["model_type"], {"model_type": 3}])
def test_a_config_without_model_type_is_named(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as exc:
        models.load(str(tmp_path))
    message = str(exc.value)
    assert str(tmp_path / "config.json") in message and "'model_type'" in message
    assert "\n" not in message


def test_an_unreadable_config_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable config.json"):
        models.load(str(tmp_path))


def test_a_missing_folder_says_what_to_pass(tmp_path):
    missing = tmp_path / "missing-dir"
    with pytest.raises(ModelLoadError) as exc:
        models.load(str(missing))
    assert str(exc.value) == (
        f"model path {str(missing)!r} is not a directory; pass a folder that holds config.json and "
        "*.safetensors, a Hugging Face id, or a synthetic:<name>")


def test_a_folder_without_config_is_not_a_checkpoint(tmp_path):
    with pytest.raises(ModelLoadError, match="has no config.json: not a checkpoint folder"):
        models.load(str(tmp_path))


def test_an_unknown_synthetic_model_lists_the_choices():
    with pytest.raises(ModelLoadError, match="unknown synthetic model 'synthetic:qwen9'; choose one of"):
        models.load("synthetic:qwen9")
    with pytest.raises(ModelLoadError, match=r"unknown synthetic model 'synthetic:tny' \(did you mean "
                                             r"synthetic:tiny\?\); choose one of: synthetic:tiny, "):
        models.load("synthetic:tny")


def test_a_hub_model_not_in_the_cache_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as exc:
        models.resolve_path("mlx-community/Not-A-Real-Model-4bit")
    message = str(exc.value)
    assert "not in the local Hugging Face cache" in message and "HF_HUB_OFFLINE is set" in message
    assert "huggingface-cli download mlx-community/Not-A-Real-Model-4bit" in message
