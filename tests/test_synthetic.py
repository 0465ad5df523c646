"""Synthetic model recipes and their published shapes."""

import json
import os
import subprocess
import sys
import time

import pytest

from pytest_mlxvlm.models import synthetic


def test_names_parse_into_recipes():
    r = synthetic.parse("synthetic:qwen3-vl-8b-4bit")
    assert (r.shape, r.dtype, r.bits) == ("qwen3-vl-8b", "bfloat16", 4)
    assert synthetic.parse("synthetic:qwen3-vl-2b").bits is None
    assert synthetic.parse("synthetic:qwen3-vl-4b-3bit").bits == 3
    assert synthetic.parse("synthetic:tiny").dtype == "float32"


def test_cache_key_holds_every_input():
    key = synthetic.parse("synthetic:qwen3-vl-4b-3bit").cache_key
    assert key == f"qwen3-vl-4b-r{synthetic.RECIPE_VERSION}-bfloat16-q3g64-s0"
    assert synthetic.parse("synthetic:tiny", seed=7).cache_key.endswith("-s7")


@pytest.mark.parametrize("name", ["synthetic:nope", "synthetic:qwen3-vl-8b-7bit", "synthetic:tiny-4bit"])
def test_unknown_names_list_the_choices(name):
    with pytest.raises(synthetic.SyntheticModelError, match="synthetic"):
        synthetic.parse(name)


def test_known_names_are_listed():
    names = synthetic.known_names()
    assert "tiny" in names and "qwen3-vl-8b-4bit" in names and "qwen3-vl-2b-bf16" in names


@pytest.mark.parametrize(
    "shape, billions",
    # Published sizes: Qwen3-VL-2B 2.13B, -4B 4.44B, -8B 8.77B parameters.
    [("qwen3-vl-2b", 2.13), ("qwen3-vl-4b", 4.44), ("qwen3-vl-8b", 8.77)],
)
def test_published_shapes_give_the_published_parameter_counts(shape, billions):
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_vlm.utils import get_model_and_args

    config = synthetic.model_config(synthetic.parse(f"synthetic:{shape}"))
    module, _ = get_model_and_args(config)
    model_config = module.ModelConfig.from_dict(config)
    model_config.text_config = module.TextConfig.from_dict(config["text_config"])
    model_config.vision_config = module.VisionConfig.from_dict(config["vision_config"])
    model = module.Model(model_config)  # lazy: no weights are drawn until evaluated
    count = sum(v.size for _, v in tree_flatten(model.parameters()))
    assert count / 1e9 == pytest.approx(billions, abs=0.01)
    del model
    mx.clear_cache()


def test_tiny_builds_a_loadable_checkpoint(tmp_path):
    path = synthetic.ensure_built(synthetic.parse("synthetic:tiny"), root=tmp_path)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl"
    assert config["synthetic"]["shape"] == "tiny"
    tok = json.loads((path / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    assert len(vocab) == config["text_config"]["vocab_size"]
    assert vocab["<|image_pad|>"] == 151655 and vocab["<|im_end|>"] == 151645
    # a second call finds the cached build
    assert synthetic.ensure_built(synthetic.parse("synthetic:tiny"), root=tmp_path) == path


BUILD = """
import sys
from pathlib import Path
from pytest_mlxvlm.models import synthetic
synthetic.ensure_built(synthetic.parse("synthetic:tiny"), root=Path(sys.argv[1]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_build_killed_midway_is_cleared_by_the_next_one(tmp_path):
    from pytest_mlxvlm.common.machine import host_id

    folder = tmp_path / "synthetic"
    build = subprocess.Popen([sys.executable, "-c", BUILD, str(tmp_path)],
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 120
        while not list(folder.glob(".tiny-*.build-*")) and time.monotonic() < deadline and build.poll() is None:
            time.sleep(0.02)
        assert list(folder.glob(".tiny-*.build-*")), "the build never started"
        time.sleep(0.5)  # writing into it
    finally:
        build.kill()  # SIGKILL (SIGTERM ends a Python build as abruptly): no clean-up can run
        build.wait()
    (left,) = folder.glob(".tiny-*.build-*")
    assert f".build-{host_id()}-{build.pid}." in left.name
    running = folder / f".tiny-r1-float32-s0.build-{host_id()}-{os.getpid()}.abc"  # a build still going
    running.mkdir()
    assert synthetic.sweep_stale_builds(folder) == [left]  # what the next build does first
    assert not left.exists() and running.exists()
