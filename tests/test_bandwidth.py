"""The bandwidth limit of decode."""

import pytest

from pytest_mlxvlm.common.bandwidth import decode_limit, lookup_gbps


@pytest.mark.parametrize("machine, gbps", [
    ({"chip": "Apple M4 Max", "memory_gb": 128, "backend": "metal"}, 546),
    ({"chip": "Apple M4 Max", "memory_gb": 36, "backend": "metal"}, 410),
    ({"chip": "Apple M1 Max", "memory_gb": 64, "backend": "metal"}, 400),
    ({"chip": "Apple M2 Ultra", "memory_gb": 192, "backend": "metal"}, 800),
    ({"chip": "Apple M3", "memory_gb": 16, "backend": "metal"}, 100),
    ({"chip": "NVIDIA H100 80GB HBM3", "backend": "cuda"}, 3350),
    ({"chip": "NVIDIA H100 PCIe", "backend": "cuda"}, 2000),
    ({"chip": "NVIDIA H200", "backend": "cuda"}, 4800),
    ({"chip": "AMD EPYC", "backend": "cpu"}, None),
])
def test_published_bandwidths(machine, gbps):
    assert lookup_gbps(machine) == gbps


def test_decode_limit():
    limit = decode_limit(400, weight_bytes=4_000_000_000, kv_per_position=100_000,
                         prompt_tokens=950, generated=100)
    assert limit["bytes_per_token"] == 4_000_000_000 + 100_000 * 1000
    assert limit["limit_tps"] == pytest.approx(400e9 / 4.1e9)


@pytest.mark.slow  # loads synthetic:tiny
def test_tiny_model_weight_bytes():
    from pytest_mlxvlm.common.bandwidth import decode_weight_bytes, kv_bytes_per_position
    from pytest_mlxvlm.models import loading as models

    loaded = models.load("synthetic:tiny")
    # tied embeddings: the whole table is read as the LM head (151936 x 64 float32)
    assert decode_weight_bytes(loaded.model) > 151936 * 64 * 4
    # 2 (K, V) x 2 layers x 2 KV heads x 16 dims x 4 bytes
    assert kv_bytes_per_position(loaded.model) == 2 * 2 * 2 * 16 * 4


def _t(name, shape, nbytes, buffer=None):
    from pytest_mlxvlm.common.bandwidth import Tensor

    return Tensor(name, shape, nbytes, buffer if buffer is not None else hash(name))


def test_untied_embedding_reads_one_row_and_the_head_whole():
    from pytest_mlxvlm.common.bandwidth import bytes_per_token

    tensors = [_t("model.embed_tokens.weight", (1000, 8), 16000), _t("lm_head.weight", (1000, 8), 16000),
               _t("model.layers.0.mlp.up_proj.weight", (32, 8), 512)]
    assert bytes_per_token(tensors, tied=False) == 16 + 16000 + 512
    # tied, no head of its own (Qwen): the embedding is read whole as the head
    assert bytes_per_token(tensors[::2], tied=True) == 16000 + 512


def test_a_head_sharing_the_embeddings_buffer_is_read_once():
    from pytest_mlxvlm.common.bandwidth import bytes_per_token

    # Gemma 3 in mlx-vlm: lm_head.weight is the embedding's array; its quantized scales are its own
    tensors = [_t("model.embed_tokens.weight", (1000, 1), 4000, buffer=1),
               _t("model.embed_tokens.scales", (1000, 1), 2000),
               _t("lm_head.weight", (1000, 1), 4000, buffer=1), _t("lm_head.scales", (1000, 1), 2000)]
    assert bytes_per_token(tensors, tied=False) == 4000 + 2 + 2000


def test_moe_reads_the_routed_experts_only():
    from pytest_mlxvlm.common.bandwidth import bytes_per_token

    experts = [_t(f"model.layers.0.mlp.switch_mlp.{p}_proj.weight", (128, 768, 64), 128 * 1000)
               for p in ("gate", "up", "down")]
    router = _t("model.layers.0.mlp.gate.weight", (128, 64), 16384)
    tensors = experts + [router]
    assert bytes_per_token(tensors, tied=True, num_experts=128, experts_per_token=8) == 3 * 8 * 1000 + 16384
    assert bytes_per_token(tensors, tied=True) == 3 * 128 * 1000 + 16384  # dense reading: all


@pytest.mark.slow  # builds the tiny MoE twin
def test_moe_twin_weight_bytes(tmp_path, monkeypatch):
    from mlx.utils import tree_flatten

    from pytest_mlxvlm.common.bandwidth import decode_weight_bytes
    from pytest_mlxvlm.models import loading as models

    monkeypatch.setenv("PYTEST_MLXVLM_CACHE", str(tmp_path))
    model = models.load("synthetic:qwen3-vl-30b-a3b-tiny").model
    params = dict(tree_flatten(model.language_model.parameters()))
    experts = sum(v.nbytes for k, v in params.items() if "switch_mlp" in k)
    embed = params["model.embed_tokens.weight"]
    everything = sum(v.nbytes for v in params.values())
    # 2 of 8 experts per token; untied: one embedding row
    assert decode_weight_bytes(model) == everything - experts + experts * 2 // 8 - embed.nbytes + embed.nbytes // embed.shape[0]
