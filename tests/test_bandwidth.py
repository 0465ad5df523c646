"""The bandwidth limit of decode."""

import pytest

from pytest_mlxvlm.bandwidth import decode_limit, lookup_gbps


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
    from pytest_mlxvlm import models
    from pytest_mlxvlm.bandwidth import decode_weight_bytes, kv_bytes_per_position

    loaded = models.load("synthetic:tiny")
    # tied embeddings: the whole table is read as the LM head (151936 x 64 float32)
    assert decode_weight_bytes(loaded.model) > 151936 * 64 * 4
    # 2 (K, V) x 2 layers x 2 KV heads x 16 dims x 4 bytes
    assert kv_bytes_per_position(loaded.model) == 2 * 2 * 2 * 16 * 4
