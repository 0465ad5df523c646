"""Write a twin checkpoint: mlx-vlm's own model classes, deterministic random weights.

The model is constructed as ``mlx_vlm.utils.load_model`` constructs it (``ModelConfig.from_dict``
and the module configs), cast to the config's dtype and quantized as ``mlx_vlm.convert`` does
(multimodal towers kept in full precision, the model's own quantization predicate), then saved
with ``mlx_vlm.utils.save_weights``; ``mlx_vlm.load`` reads it like any checkpoint.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

from . import offlinetok
from .twincheck import INDEX_FILE, compare_with_index, read_tensor_headers
from .twins import TOKENIZER_FILES, TWIN_RECIPE_VERSION, TwinFiles, TwinRecipe, prepare


def build_model(config: dict[str, Any], dtype: str, seed: int) -> Any:
    """The model of a config with deterministic random weights (lazy until evaluated)."""
    import mlx.core as mx
    from mlx.utils import tree_map_with_path
    from mlx_vlm.utils import get_model_and_args, update_module_configs

    config = copy.deepcopy(config)
    module, _ = get_model_and_args(config)
    config.setdefault("text_config", config.pop("llm_config", {}))
    config.setdefault("vision_config", {})
    config.setdefault("audio_config", {})
    model_config = module.ModelConfig.from_dict(config)
    model_config = update_module_configs(
        model_config, module, config, ["text", "vision", "perceiver", "projector", "audio"])
    mx.random.seed(seed)
    model = module.Model(model_config)
    target = getattr(mx, dtype)
    cast = getattr(model, "cast_predicate", lambda _: True)
    model.update(tree_map_with_path(
        lambda k, v: v.astype(target) if cast(k) and mx.issubdtype(v.dtype, mx.floating) else v,
        model.parameters()))
    return model


def quantize(model: Any, config: dict[str, Any]) -> None:
    """Quantize as ``mlx_vlm.convert --quantize`` does, with the config's group size and bits."""
    from mlx_vlm.quant_utils import quantize_model
    from mlx_vlm.utils import skip_multimodal_module

    quant = config["quantization"]
    own = getattr(model, "quant_predicate", None)

    def predicate(path: str, module: Any) -> Any:
        if skip_multimodal_module(path):
            return False
        return own(path, module) if own is not None else True

    plain = {k: v for k, v in config.items() if k != "quantization"}
    quantize_model(model, plain, quant["group_size"], quant["bits"], quant_predicate=predicate)


def write_twin(recipe: TwinRecipe, path: Path) -> None:
    """Write config, weights, tokenizer and processor files of a twin into ``path``."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_vlm.utils import save_weights

    files = prepare(recipe)
    path.mkdir(parents=True, exist_ok=True)
    model = build_model(files.config, files.dtype, recipe.seed)
    if files.config.get("quantization"):  # on the lazy weights: each is drawn, then packed
        quantize(model, files.config)
    for _, value in tree_flatten(model.parameters()):  # one tensor at a time: low peak memory
        mx.eval(value)
    save_weights(path, model)
    config = dict(files.config)
    config["synthetic"] = {"twin_recipe_version": TWIN_RECIPE_VERSION, "name": recipe.name,
                           "folder": recipe.folder, "tiny": recipe.tiny, "dtype": files.dtype,
                           "quantization": config.get("quantization"), "seed": recipe.seed}
    published = Path(recipe.folder) / INDEX_FILE
    if published.is_file() and not recipe.tiny:  # the real index: what differs (nothing, ideally)
        index = json.loads(published.read_text())
        config["synthetic"]["index_check"] = compare_with_index(read_tensor_headers(path), index)
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    for name, data in files.processors.items():
        (path / name).write_text(json.dumps(data, indent=2))
    write_tokenizer(files, path)


def write_tokenizer(files: TwinFiles, path: Path) -> None:
    """The folder's real tokenizer files, or the family's offline tokenizer."""
    if files.tokenizer_folder is not None:
        for name in TOKENIZER_FILES:
            if (files.tokenizer_folder / name).is_file():
                shutil.copyfile(files.tokenizer_folder / name, path / name)
        return
    spec = files.offline_tokenizer or {}
    config = files.config
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    vocab_size = int(text.get("vocab_size") or config["vocab_size"])
    offlinetok.write_tokenizer(
        path, vocab_size, spec["pinned"], unpinned=spec.get("unpinned", []),
        tokenizer_config=spec.get("config", {}), chat_template=offlinetok.chat_template(spec["chat"]),
    )
