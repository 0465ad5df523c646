"""Synthetic models: real mlx-vlm architecture code, deterministic random weights, built offline.

``synthetic:<shape>[-<quant>]`` names a model built from the published dimensions in
``shapes.json`` (``tiny``, ``qwen3-vl-2b``, ``qwen3-vl-4b``, ``qwen3-vl-8b``) and an optional
quantization of the language model (``bf16``, ``4bit``, ``3bit``; e.g. ``qwen3-vl-8b-4bit``).
The checkpoint is written once into a cache directory whose name holds every input of the
build (recipe version, dtype, quantization, seed), then loaded like any other checkpoint
through ``mlx_vlm.load``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from . import offlinetok, twins

PREFIX = "synthetic:"
RECIPE_VERSION = 1
DEFAULT_SEED = 0
SHAPES_FILE = Path(__file__).with_name("shapes.json")

# Qwen2/3 special tokens at their real ids.
SPECIAL_TOKENS: dict[str, int] = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648,
    "<|box_end|>": 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

@dataclass(frozen=True)
class Recipe:
    """Everything that defines one synthetic checkpoint."""

    shape: str
    dtype: str
    bits: int | None
    group_size: int = 64
    seed: int = DEFAULT_SEED

    @property
    def cache_key(self) -> str:
        quant = f"q{self.bits}g{self.group_size}" if self.bits else "dense"
        return f"{self.shape}-r{RECIPE_VERSION}-{self.dtype}-{quant}-s{self.seed}"


class SyntheticModelError(ValueError):
    """A synthetic model name that names no known recipe."""


@cache
def shapes() -> dict[str, Any]:
    """The published dimensions shipped with the package."""
    return json.loads(SHAPES_FILE.read_text())


def known_names() -> list[str]:
    """Every accepted ``synthetic:`` name."""
    names = []
    for shape in shapes():
        if shape.startswith("_"):
            continue
        names.append(shape)
        if shape != "tiny":
            names += [f"{shape}-bf16", f"{shape}-4bit", f"{shape}-3bit"]
    return names + twins.known_names()


def is_synthetic(spec: str) -> bool:
    """Whether a model spec names a synthetic model."""
    return spec.startswith(PREFIX)


def parse(spec: str, seed: int = DEFAULT_SEED) -> Recipe | twins.TwinRecipe:
    """Turn ``synthetic:qwen3-vl-8b-4bit`` (or a twin's name or folder) into a recipe."""
    name = spec[len(PREFIX) :] if is_synthetic(spec) else spec
    match = re.fullmatch(r"(?P<shape>.+?)(?:-(?P<quant>bf16|fp16|fp32|\d+bit))?", name)
    table = shapes()
    if not match or match["shape"] not in table or match["shape"].startswith("_"):
        try:
            twin = twins.parse(name, seed=seed)
        except twins.TwinConfigError as exc:
            raise SyntheticModelError(str(exc)) from None
        if twin is not None:
            return twin
        known = [PREFIX + n for n in known_names()]
        near = difflib.get_close_matches(PREFIX + name, known, n=1, cutoff=0.85)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise SyntheticModelError(f"unknown synthetic model {spec!r}{hint}; choose one of: " + ", ".join(known))
    shape = match["shape"]
    quant = match["quant"]
    dtype = {"fp16": "float16", "fp32": "float32"}.get(quant or "", table[shape]["dtype"])
    bits = int(quant[:-3]) if quant and quant.endswith("bit") else None
    if bits is not None and bits not in (2, 3, 4, 5, 6, 8):
        raise SyntheticModelError(f"{spec!r}: MLX quantizes to 2, 3, 4, 5, 6 or 8 bits")
    if bits is not None and shape == "tiny":
        raise SyntheticModelError(f"{spec!r}: synthetic:tiny is too narrow to quantize")
    return Recipe(shape=shape, dtype=dtype, bits=bits, seed=seed)


def model_config(recipe: Recipe) -> dict[str, Any]:
    """The HF-style ``config.json`` of a recipe."""
    table = shapes()
    entry = table[recipe.shape]
    config = twins.merge(table["_common"], {k: entry[k] for k in ("text_config", "vision_config")})
    config["text_config"]["tie_word_embeddings"] = entry["text_config"]["tie_word_embeddings"]
    config["tie_word_embeddings"] = entry["text_config"]["tie_word_embeddings"]
    config["torch_dtype"] = recipe.dtype
    config["synthetic"] = {
        "recipe_version": RECIPE_VERSION,
        "shape": recipe.shape,
        "source": entry["source"],
        "dtype": recipe.dtype,
        "bits": recipe.bits,
        "seed": recipe.seed,
    }
    if recipe.bits:
        config["quantization"] = {"group_size": recipe.group_size, "bits": recipe.bits}
    return config


def cache_root() -> Path:
    """Where synthetic checkpoints live: ``$PYTEST_MLXVLM_CACHE`` or the user cache dir."""
    env = os.environ.get("PYTEST_MLXVLM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-mlxvlm"


_BUILDER = re.compile(r"\.build-([0-9a-f]+)-(\d+)\.[^.]*$")  # in a staging folder's name: host, pid


def _builder(folder: Path) -> dict[str, Any] | None:
    """The host and pid of the build a staging folder belongs to (from its name)."""
    found = _BUILDER.search(folder.name)
    return {"host": found.group(1), "pid": int(found.group(2))} if found else None


def sweep_stale_builds(folder: Path) -> list[Path]:
    """Remove the staging folders of builds that were killed (SIGTERM, SIGKILL) in ``folder``."""
    from ..common.leftovers import sweep

    return sweep(folder, ".*.build-*", owner_of=_builder)


def ensure_built(recipe: Recipe | twins.TwinRecipe, root: Path | None = None) -> Path:
    """The checkpoint directory of a recipe, built first if it is not cached. The build goes
    into a hidden staging folder named after this process, renamed into place when complete;
    a build killed before that leaves the folder, which the next build removes."""
    from ..common.machine import host_id

    target = (root or cache_root()) / "synthetic" / recipe.cache_key
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_builds(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{recipe.cache_key}.build-{host_id()}-{os.getpid()}.",
                                    dir=target.parent))
    try:
        write_checkpoint(recipe, staging)
        try:
            os.rename(staging, target)  # atomic; loses gracefully to a concurrent builder
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def write_checkpoint(recipe: Recipe | twins.TwinRecipe, path: Path) -> None:
    """Write config, weights, tokenizer and processor files of a recipe into ``path``."""
    if isinstance(recipe, twins.TwinRecipe):
        from .twinbuild import write_twin

        try:
            write_twin(recipe, path)
        except twins.TwinConfigError as exc:
            raise SyntheticModelError(str(exc)) from None
        return
    path.mkdir(parents=True, exist_ok=True)
    config = model_config(recipe)
    _write_weights(recipe, config, path)
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    _write_tokenizer(path, config["text_config"]["vocab_size"])
    _write_processor_files(config, path)


def _write_weights(recipe: Recipe, config: dict[str, Any], path: Path) -> None:
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_vlm.utils import get_model_and_args, save_weights

    module, _ = get_model_and_args(config)
    model_config = module.ModelConfig.from_dict(config)
    model_config.text_config = module.TextConfig.from_dict(config["text_config"])
    model_config.vision_config = module.VisionConfig.from_dict(config["vision_config"])
    mx.random.seed(recipe.seed)
    model = module.Model(model_config)
    model.set_dtype(getattr(mx, recipe.dtype))
    # Random draws are made in parameter order, one module at a time, to keep peak memory low.
    for _, value in tree_flatten(model.parameters()):
        mx.eval(value)
    if recipe.bits:
        nn.quantize(
            model.language_model,
            group_size=recipe.group_size,
            bits=recipe.bits,
            class_predicate=lambda _, m: hasattr(m, "to_quantized")
            and m.weight.shape[-1] % recipe.group_size == 0,
        )
        mx.eval(model.parameters())
    save_weights(path, model)


def _write_tokenizer(path: Path, vocab_size: int) -> None:
    tokenizer_config = {
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "unk_token": None,
        "extra_special_tokens": {
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
        },
    }
    offlinetok.write_tokenizer(path, vocab_size, SPECIAL_TOKENS,
                               tokenizer_config=tokenizer_config, chat_template=CHAT_TEMPLATE)


def _write_processor_files(config: dict[str, Any], path: Path) -> None:
    vision = config["vision_config"]
    common = {
        "patch_size": vision["patch_size"],
        "temporal_patch_size": vision["temporal_patch_size"],
        "merge_size": vision["spatial_merge_size"],
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
    }
    image = {
        **common,
        "image_processor_type": "Qwen2VLImageProcessorFast",
        "size": {"shortest_edge": 65536, "longest_edge": 16777216},
    }
    video = {
        **common,
        "video_processor_type": "Qwen3VLVideoProcessor",
        "size": {"shortest_edge": 4096, "longest_edge": 25165824},
        "fps": 2,
        "min_frames": 4,
        "max_frames": 768,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(image, indent=2))
    (path / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    (path / "processor_config.json").write_text(
        json.dumps({"processor_class": "Qwen3VLProcessor"}, indent=2)
    )
