"""The physical limit of decode: memory bandwidth / bytes read per generated token."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

# Published peak memory bandwidth in GB/s. Apple: per chip (and, where two configurations
# share a name, by unified memory size); NVIDIA: per board.
APPLE_BANDWIDTH_GBPS: dict[str, float] = {
    "m1": 68.25, "m1 pro": 200, "m1 max": 400, "m1 ultra": 800,
    "m2": 100, "m2 pro": 200, "m2 max": 400, "m2 ultra": 800,
    "m3": 100, "m3 pro": 150, "m3 max": 400, "m3 ultra": 819,
    "m4": 120, "m4 pro": 273, "m4 max": 546,
}
# The binned M3 Max (14-core CPU) and M4 Max (14-core CPU) have narrower buses; they ship
# with 36 GB, the full chips with 48 GB or more.
APPLE_BINNED_BY_MEMORY: dict[str, tuple[int, float]] = {"m3 max": (36, 300), "m4 max": (36, 410)}
NVIDIA_BANDWIDTH_GBPS: list[tuple[str, float]] = [
    ("h200", 4800), ("h100 nvl", 3900), ("h100 pcie", 2000), ("h100", 3350),
    ("a100-sxm4-80gb", 2039), ("a100 80gb pcie", 1935), ("a100", 1555),
]


def lookup_gbps(machine: dict[str, Any]) -> float | None:
    """The published bandwidth of this machine's chip, if it is in the table."""
    chip = str(machine.get("chip", "")).lower()
    backend = machine.get("backend")
    if backend == "cuda" or "nvidia" in chip:
        for name, gbps in NVIDIA_BANDWIDTH_GBPS:
            if name in chip:
                return gbps
        return None
    match = re.search(r"\b(m[1-9])(?:\s+(pro|max|ultra))?\b", chip)
    if not match or "apple" not in chip:
        return None
    key = match[1] + (f" {match[2]}" if match[2] else "")
    binned = APPLE_BINNED_BY_MEMORY.get(key)
    if binned and machine.get("memory_gb") and machine["memory_gb"] <= binned[0]:
        return binned[1]
    return APPLE_BANDWIDTH_GBPS.get(key)


@dataclass(frozen=True)
class Tensor:
    """One language-model parameter as decode sees it."""

    name: str
    shape: tuple[int, ...]
    nbytes: int  # as stored: a quantized weight's packed bytes, its scales and biases apart
    buffer: int  # identity of the memory it lives in (a tied head shares the embedding's)


EXPERT_MARKERS = ("switch_mlp", ".experts.")


def bytes_per_token(
    tensors: list[Tensor], *, tied: bool, num_experts: int | None = None,
    experts_per_token: int | None = None,
) -> int:
    """Bytes of weights one generated token reads.

    A buffer shared by two parameters (a tied head and its embedding) is read once. An input
    embedding table (``embed_tokens`` and per-layer input tables) gives one row per token,
    unless the model is ``tied`` and reads it whole as its output head. Expert tensors
    (first dimension ``num_experts``) are read for the ``experts_per_token`` routed experts
    only. Quantized tensors count their packed weights, scales and biases as stored.
    """
    counted: set[int] = set()
    uses = Counter(t.buffer for t in tensors)
    shared = {buffer for buffer, count in uses.items() if count > 1}
    total = 0.0
    for t in tensors:
        if t.buffer in counted:
            continue
        counted.add(t.buffer)
        size = float(t.nbytes)
        rows = t.shape[0] if t.shape else 1
        if "embed" in t.name and not (tied and "per_layer" not in t.name) and t.buffer not in shared:
            size /= max(rows, 1)
        elif num_experts and experts_per_token and rows == num_experts and any(
            m in t.name for m in EXPERT_MARKERS
        ):
            size *= experts_per_token / num_experts
        total += size
    return int(total)


def _moe(text: Any) -> tuple[int | None, int | None]:
    """(experts, experts per token) of a language-model config, or (None, None) if dense."""
    experts = next((getattr(text, k) for k in ("num_experts", "n_routed_experts", "num_local_experts")
                    if getattr(text, k, None)), None)
    active = next((getattr(text, k) for k in ("num_experts_per_tok", "top_k_experts", "moe_topk")
                   if getattr(text, k, None)), None)
    return experts, active


def decode_weight_bytes(model: Any) -> int:
    """Bytes of language-model weights read for one generated token (see ``bytes_per_token``)."""
    from mlx.utils import tree_flatten

    tensors = [Tensor(name, tuple(v.shape), int(v.nbytes), id(v))
               for name, v in tree_flatten(model.language_model.parameters())]
    text = getattr(model.config, "text_config", None)
    tied = bool(getattr(text, "tie_word_embeddings", False))
    experts, active = _moe(text)
    return bytes_per_token(tensors, tied=tied, num_experts=experts, experts_per_token=active)


def kv_bytes_per_position(model: Any) -> int:
    """Bytes of keys and values cached per token of context (all layers)."""
    text = model.config.text_config
    heads = text.num_key_value_heads or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    itemsize = _activation_itemsize(model)
    return 2 * text.num_hidden_layers * heads * head_dim * itemsize


def _activation_itemsize(model: Any) -> int:
    from mlx.utils import tree_flatten

    for _, v in tree_flatten(model.language_model.parameters()):
        if v.dtype.size in (2, 4) and "float" in str(v.dtype):
            return v.dtype.size
    return 2


def decode_limit(
    gbps: float, weight_bytes: int, kv_per_position: int, prompt_tokens: int, generated: int
) -> dict[str, float]:
    """Upper bound of decode tok/s: bandwidth / (weights + KV cache at the mean context)."""
    mean_context = prompt_tokens + generated / 2
    per_token = weight_bytes + kv_per_position * mean_context
    return {
        "gbps": gbps,
        "bytes_per_token": float(per_token),
        "limit_tps": gbps * 1e9 / per_token,
    }
