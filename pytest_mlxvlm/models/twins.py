"""Weightless twins: a real checkpoint's architecture from its small files, with random weights.

``synthetic:<name>`` names a twin shipped in ``pytest_mlxvlm/twins/<name>/`` (the published
``config.json`` and processor configs of a checkpoint people run), ``synthetic:<name>-tiny``
the same family cut to a few layers of width 64 for CPUs (where the family allows, a smaller
image side with the published image-token counts: ``tiny_processors`` in families.json),
``-4bit``/``-8bit``/``-bf16`` its
quantization. ``synthetic:/path/to/folder`` (or ``./folder``) builds a twin from any folder
holding ``config.json`` and the processor configs, ``synthetic:owner/name`` from those files of
a Hugging Face model in the local cache (downloaded alone when the hub is reachable). The
checks here read JSON only; ``twinbuild`` draws the weights through mlx-vlm's model classes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from . import hub

TWINS_DIR = Path(__file__).with_name("twins")
FAMILIES_FILE = TWINS_DIR / "families.json"
TWIN_RECIPE_VERSION = 1
QUANT_BITS = (2, 3, 4, 5, 6, 8)
# The small files of a checkpoint a twin is built from (weights are never read).
CONFIG_FILES = ("config.json", "preprocessor_config.json", "processor_config.json",
                "video_preprocessor_config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.json", "chat_template.jinja", "tokenizer.model", "vocab.json",
                   "merges.txt", "added_tokens.json")


class TwinConfigError(ValueError):
    """A twin that cannot be built from its files; the message names the file and the field."""


@dataclass(frozen=True)
class TwinRecipe:
    """Everything that defines one twin checkpoint."""

    name: str  # what the user wrote after ``synthetic:``
    folder: str  # where config.json and the processor configs are
    tiny: bool = False
    quant: str | None = None  # "4bit", "bf16", ... or None: as the config says
    seed: int = 0

    @property
    def bits(self) -> int | None:
        return int(self.quant[:-3]) if self.quant and self.quant.endswith("bit") else None

    @property
    def cache_key(self) -> str:
        digest = hashlib.sha256()
        for name in CONFIG_FILES + TOKENIZER_FILES + ("twin.json",):
            file = Path(self.folder) / name
            if file.is_file():
                digest.update(name.encode() + b"\0" + file.read_bytes())
        digest.update(FAMILIES_FILE.read_bytes())
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", Path(self.name).name or "twin").strip("-")
        variant = ("tiny-" if self.tiny else "") + (self.quant or "asis")
        return f"twin-{slug}-r{TWIN_RECIPE_VERSION}-{variant}-{digest.hexdigest()[:12]}-s{self.seed}"


@cache
def families() -> dict[str, Any]:
    """Per model type: the offline tokenizer and the tiny reduction."""
    return json.loads(FAMILIES_FILE.read_text())


def shipped_names() -> list[str]:
    """The twins shipped with the package."""
    return sorted(p.name for p in TWINS_DIR.iterdir() if (p / "config.json").is_file())


def known_names() -> list[str]:
    """Every accepted shipped twin name, with its variants."""
    names = []
    for name in shipped_names():
        names += [name, f"{name}-tiny", f"{name}-4bit", f"{name}-8bit", f"{name}-bf16"]
    return names


def is_folder_spec(name: str) -> bool:
    """A path (``/abs``, ``./rel``, ``~/x`` or an existing folder) rather than a name or id."""
    return name.startswith((".", "/", "~")) or Path(name).expanduser().is_dir()


def parse(name: str, seed: int = 0) -> TwinRecipe | None:
    """The twin a ``synthetic:`` name means, or None when it names no twin."""
    if is_folder_spec(name):
        folder = Path(name).expanduser()
        if not (folder / "config.json").is_file():
            raise TwinConfigError(f"{folder}: no config.json (a twin is built from a folder holding "
                                  "config.json and the processor configs)")
        return TwinRecipe(name=name, folder=str(folder.resolve()), seed=seed)
    match = re.fullmatch(r"(?P<base>.+?)(?P<tiny>-tiny)?(?:-(?P<quant>bf16|\d+bit))?", name)
    if match and match["base"] in shipped_names():
        quant = match["quant"]
        if quant and quant.endswith("bit") and int(quant[:-3]) not in QUANT_BITS:
            raise TwinConfigError(f"synthetic:{name}: MLX quantizes to 2, 3, 4, 5, 6 or 8 bits")
        return TwinRecipe(name=name, folder=str(TWINS_DIR / match["base"]), tiny=bool(match["tiny"]),
                          quant=quant, seed=seed)
    if name.count("/") == 1:
        return TwinRecipe(name=name, folder=str(hub_config_folder(name)), seed=seed)
    return None


def hub_config_folder(repo_id: str) -> Path:
    """The small files of a Hugging Face model: from the local cache, else downloaded alone."""
    found = hub.snapshot(repo_id, list(CONFIG_FILES + TOKENIZER_FILES))
    if isinstance(found, Path):
        return found
    reason = found
    raise TwinConfigError(
        f"synthetic:{repo_id}: its config.json is not in the local Hugging Face cache and could "
        f"not be downloaded ({reason}); pass synthetic:/path/to/a/folder holding config.json"
    )


def read_json(folder: Path, name: str, required: bool = False) -> dict[str, Any] | None:
    """A JSON object from the folder; a missing required file or a bad one names the file."""
    file = folder / name
    if not file.is_file():
        if required:
            raise TwinConfigError(f"{file}: missing")
        return None
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise TwinConfigError(f"{file}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TwinConfigError(f"{file}: a JSON object is expected")
    return data


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it, nested objects merged."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _get(obj: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def text_section(config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The language model's fields and where they live (``text_config`` or the top level)."""
    for key in ("text_config", "llm_config"):
        if isinstance(config.get(key), dict):
            return config[key], key + "."
    return config, ""


def check_model_config(config: dict[str, Any], file: Path) -> None:
    """The fields every twin needs: a model type mlx-vlm has, a language model, a vision tower."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise TwinConfigError(f"{file}: field 'model_type' is missing")
    from mlx_vlm.utils import get_model_and_args

    try:
        get_model_and_args(config)
    except (ValueError, ImportError, KeyError):
        import mlx_vlm

        raise TwinConfigError(f"{file}: field 'model_type' = {model_type!r} is not a model type "
                              f"mlx-vlm {mlx_vlm.__version__} supports") from None
    text, where = text_section(config)
    for field in ("hidden_size", "num_hidden_layers", "vocab_size"):
        if not isinstance(text.get(field), int) or text[field] <= 0:
            state = "missing" if field not in text else f"{text[field]!r}, not a positive integer"
            raise TwinConfigError(f"{file}: field '{where}{field}' is {state}")
    if not isinstance(config.get("vision_config"), dict):
        raise TwinConfigError(f"{file}: field 'vision_config' is missing (a vision-language "
                              "model's config holds its vision tower)")


def _patch(value: Any) -> Any:
    return value.get("height") if isinstance(value, dict) else value


# (processor file, its field, config.json field): the two must agree where both are given.
AGREEMENTS: list[tuple[str, str, str]] = [
    ("preprocessor_config.json", "patch_size", "vision_config.patch_size"),
    ("preprocessor_config.json", "merge_size", "vision_config.spatial_merge_size"),
    ("preprocessor_config.json", "temporal_patch_size", "vision_config.temporal_patch_size"),
    ("preprocessor_config.json", "image_seq_length", "mm_tokens_per_image"),
    ("processor_config.json", "image_seq_length", "mm_tokens_per_image"),
    ("preprocessor_config.json", "size.height", "vision_config.image_size"),
    ("preprocessor_config.json", "max_image_size.longest_edge", "vision_config.image_size"),
    ("preprocessor_config.json", "encoder_patch_size", "vision_config.patch_size"),
    ("preprocessor_config.json", "downsample_factor", "downsample_factor"),
    ("preprocessor_config.json", "tile_size", "tile_size"),
    ("processor_config.json", "spatial_merge_size", "spatial_merge_size"),
    ("processor_config.json", "patch_size", "vision_config.patch_size"),
    ("preprocessor_config.json", "pooling_kernel_size", "vision_config.pooling_kernel_size"),
    ("preprocessor_config.json", "max_soft_tokens", "vision_soft_tokens_per_image"),
    ("processor_config.json", "image_seq_length", "vision_soft_tokens_per_image"),
    ("processor_config.json", "image_processor.pooling_kernel_size", "vision_config.pooling_kernel_size"),
    ("processor_config.json", "image_processor.patch_size", "vision_config.patch_size"),
    ("processor_config.json", "image_processor.max_soft_tokens", "vision_soft_tokens_per_image"),
]


def check_processor_agrees(config: dict[str, Any], folder: Path,
                           processors: dict[str, dict[str, Any]]) -> None:
    """Each processor field the model config also states holds the same value."""
    for file, field, config_field in AGREEMENTS:
        proc = processors.get(file)
        mine, theirs = _patch(_get(proc or {}, field)), _get(config, config_field)
        if proc is None or mine is None or theirs is None:
            continue
        if mine != theirs:
            raise TwinConfigError(f"{folder / file}: field '{field}' = {mine!r} disagrees with "
                                  f"config.json '{config_field}' = {theirs!r}")
    seq = _get(processors.get("processor_config.json") or {}, "image_seq_len")
    vision = config.get("vision_config") or {}
    if seq is not None and config.get("scale_factor") and vision.get("image_size"):
        side = vision["image_size"] // vision.get("patch_size", 14)
        expected = side * side // config["scale_factor"] ** 2
        if seq != expected:
            raise TwinConfigError(
                f"{folder / 'processor_config.json'}: field 'image_seq_len' = {seq} disagrees with "
                f"config.json: ({vision['image_size']}/{vision.get('patch_size', 14)})² / "
                f"scale_factor² = {expected}")


@dataclass
class TwinFiles:
    """What a twin checkpoint is written from: its config, processor configs and tokenizer."""

    config: dict[str, Any]
    processors: dict[str, dict[str, Any]]  # file name -> JSON object
    tokenizer_folder: Path | None  # the real tokenizer files, where the folder has them
    offline_tokenizer: dict[str, Any] | None  # else the family's offline tokenizer spec
    dtype: str


def prepare(recipe: TwinRecipe) -> TwinFiles:
    """Read and check a twin's files, and apply its variant (tiny, quantization)."""
    folder = Path(recipe.folder)
    file = folder / "config.json"
    config = read_json(folder, "config.json", required=True)
    check_model_config(config, file)
    processors = {n: d for n in CONFIG_FILES[1:] if (d := read_json(folder, n)) is not None}
    if "preprocessor_config.json" not in processors:
        raise TwinConfigError(f"{folder / 'preprocessor_config.json'}: missing (the image "
                              "processor's config decides the image tokens)")
    check_processor_agrees(config, folder, processors)
    family = families().get(config["model_type"], {})
    if recipe.tiny:
        if "tiny" not in family:
            raise TwinConfigError(f"{file}: no tiny reduction for model type {config['model_type']!r}")
        config = merge(config, family["tiny"])
        for name, extra in family.get("tiny_processors", {}).items():  # a smaller image side
            processors[name] = merge(processors.get(name, {}), extra)
        check_processor_agrees(config, folder, processors)
    text, _ = text_section(config)
    dtype = "float32" if recipe.tiny else str(config.get("torch_dtype") or text.get("torch_dtype")
                                              or config.get("dtype") or "bfloat16")
    if recipe.quant == "bf16":
        config.pop("quantization", None)
        dtype = "bfloat16"
    elif recipe.bits:
        config["quantization"] = {"group_size": 64, "bits": recipe.bits}
    quant = config.get("quantization")
    if quant is not None and not (isinstance(quant, dict) and quant.get("bits") in QUANT_BITS
                                  and isinstance(quant.get("group_size"), int)):
        raise TwinConfigError(f"{file}: field 'quantization' = {quant!r}: bits 2-8 and an integer "
                              "group_size are expected")
    has_tokenizer = (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file()
    if not has_tokenizer and "tokenizer" not in family:
        raise TwinConfigError(f"{folder}: no tokenizer files, and no offline tokenizer for model "
                              f"type {config['model_type']!r} (families: {', '.join(sorted(families()))})")
    return TwinFiles(config=config, processors=processors,
                     tokenizer_folder=folder if has_tokenizer else None,
                     offline_tokenizer=None if has_tokenizer else family["tokenizer"], dtype=dtype)
