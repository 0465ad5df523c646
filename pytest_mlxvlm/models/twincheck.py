"""Does a twin match its checkpoint? Tensors against a safetensors index, image tokens against
the published processor's rule (no mlx here: JSON and arithmetic only)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

INDEX_FILE = "model.safetensors.index.json"
DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "U8": 1, "I8": 1, "F64": 8, "I64": 8}


def read_tensor_headers(checkpoint: Path) -> dict[str, dict[str, Any]]:
    """Name -> {dtype, shape, nbytes} of every tensor in a folder's ``*.safetensors`` headers."""
    tensors: dict[str, dict[str, Any]] = {}
    for file in sorted(checkpoint.glob("*.safetensors")):
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            tensors[name] = {"dtype": info["dtype"], "shape": info["shape"], "nbytes": end - start}
    return tensors


def compare_with_index(tensors: dict[str, dict[str, Any]], index: dict[str, Any],
                       index_name: str = INDEX_FILE) -> list[str]:
    """What differs between a twin's tensors and a published index: names, and the total bytes
    (which carries the dtype and quantization of every tensor; an index lists no dtypes)."""
    published = set(index.get("weight_map") or {})
    mine = set(tensors)
    problems = []
    if missing := sorted(published - mine):
        problems.append(f"{len(missing)} tensors of {index_name} are not in the twin, e.g. {missing[:3]}")
    if extra := sorted(mine - published):
        problems.append(f"{len(extra)} tensors of the twin are not in {index_name}, e.g. {extra[:3]}")
    total = (index.get("metadata") or {}).get("total_size")
    size = sum(t["nbytes"] for t in tensors.values())
    if total is not None and int(total) != size:
        problems.append(f"total size {size} bytes, {index_name} says {int(total)} "
                        f"({(size - int(total)) / int(total):+.2%})")
    return problems


def parameter_count(tensors: dict[str, dict[str, Any]], bits: int | None = None) -> int:
    """Parameters held by tensors (a quantized weight packs 32 / bits values per uint32)."""
    count = 0
    for name, info in tensors.items():
        if name.endswith((".scales", ".biases")):
            continue
        elements = math.prod(info["shape"])
        count += elements * 32 // bits if bits and info["dtype"] == "U32" else elements
    return count


def _smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize: each side a multiple of ``factor``, the area within the pixel limits."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def published_image_tokens(config: dict[str, Any], processors: dict[str, dict[str, Any]],
                           width: int, height: int) -> int | None:
    """Image tokens the published processor gives one image of this size (None: no rule here).

    Qwen2.5-VL: one per 28x28 px after its resize; Qwen3-VL: one per 32x32 px, at least 65536
    px; Gemma 3: ``mm_tokens_per_image``; Gemma 4: the largest size within ``max_soft_tokens``
    pooled patches, each side a whole number of them (about 256-280 whatever the size); Mistral3/Pixtral: one per (patch x merge)² px, the
    longest side at most ``size.longest_edge``; LFM2-VL, one tile: one per 32x32 px between
    ``min_image_tokens`` and ``max_image_tokens``; SmolVLM: longest side scaled to
    ``size.longest_edge``, tiles of ``max_image_size`` plus the whole image, ``image_seq_len`` each.
    """
    pre = processors.get("preprocessor_config.json") or {}
    proc = processors.get("processor_config.json") or {}
    kind = config.get("model_type")
    if kind in ("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "qwen3_vl_moe"):
        size = pre.get("size") or {}
        factor = pre["patch_size"] * pre["merge_size"]
        low = pre.get("min_pixels") or size.get("shortest_edge")
        high = pre.get("max_pixels") or size.get("longest_edge")
        h, w = _smart_resize(height, width, factor, low, high)
        return (h // factor) * (w // factor)
    if kind == "gemma3":
        return int(config["mm_tokens_per_image"])
    if kind == "gemma4":  # a patch budget: the largest size within it, sides in pooled steps
        patch, kernel = pre["patch_size"], pre["pooling_kernel_size"]
        budget = pre["max_soft_tokens"] * kernel**2 * patch**2
        step = kernel * patch
        factor = math.sqrt(budget / (height * width))
        return math.floor(factor * height / step) * math.floor(factor * width / step)
    if kind in ("mistral3", "pixtral"):
        patch = pre["patch_size"]["height"] if isinstance(pre["patch_size"], dict) else pre["patch_size"]
        step = patch * proc.get("spatial_merge_size", config.get("spatial_merge_size", 1))
        scale = max(1.0, max(width, height) / pre["size"]["longest_edge"])
        return math.ceil(height / scale / step) * math.ceil(width / scale / step)
    if kind == "lfm2_vl":
        step = pre["encoder_patch_size"] * pre["downsample_factor"]
        h, w = _smart_resize(height, width, step, pre["min_image_tokens"] * step**2,
                             pre["max_image_tokens"] * step**2)
        if (h // step) * (w // step) > pre["max_image_tokens"] or max(width, height) > pre["tile_size"]:
            return None  # split into tiles: no rule here
        return (h // step) * (w // step)
    if kind in ("smolvlm", "idefics3"):
        tile = pre["max_image_size"]["longest_edge"]
        scale = pre["size"]["longest_edge"] / max(width, height)
        tiles = math.ceil(height * scale / tile) * math.ceil(width * scale / tile)
        return (tiles + (1 if tiles > 1 else 0)) * proc["image_seq_len"]
    return None
