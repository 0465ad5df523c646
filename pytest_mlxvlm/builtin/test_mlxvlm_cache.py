"""The built-in prefix-cache suite: vllm-mlx's documented semantics, plus adversarial cases.

Semantics (key = hash(image content) + hash(prompt)): the same image and prompt HIT, also
when returning to them after other requests; the same image with a different prompt MISS;
a different image with the same prompt MISS; at every resolution. Each step is a real
generation through the engine, checked against a cold run of the same input.
"""

from __future__ import annotations

from typing import Any

import pytest

P1 = "Describe this image in detail."
P2 = "What colours and shapes do you see?"


def test_cache_basic(mlx_cache: Any, mlx_cache_image: Any) -> None:
    a, b = mlx_cache_image(336, seed=1), mlx_cache_image(336, seed=2)
    mlx_cache.step("first", a, P1, "MISS", "image A, prompt 1: nothing cached yet")
    mlx_cache.step("repeat", a, P1, "HIT", "image A, prompt 1 again")
    mlx_cache.step("other prompt", a, P2, "MISS", "image A, prompt 2")
    mlx_cache.step("other image", b, P1, "MISS", "image B, prompt 1")
    mlx_cache.step("return", a, P1, "HIT", "back to image A, prompt 1")
    mlx_cache.check()


def test_cache_different_images(mlx_cache: Any, mlx_cache_image: Any) -> None:
    images = [mlx_cache_image(336, seed=s) for s in (11, 12, 13)]
    for i, image in enumerate(images):
        mlx_cache.step(f"image {i + 1}", image, P1, "MISS", f"image {i + 1} of 3, same prompt")
    mlx_cache.step("image 1 again", images[0], P1, "HIT", "back to image 1")
    mlx_cache.check()


@pytest.mark.parametrize("side", [224, 336, 512, 768])
def test_cache_resolutions(mlx_cache: Any, mlx_cache_image: Any, side: int) -> None:
    image = mlx_cache_image(side, seed=side)
    mlx_cache.step("first", image, P1, "MISS", f"{side}x{side}, nothing cached")
    mlx_cache.step("repeat", image, P1, "HIT", f"{side}x{side} again")
    mlx_cache.step("other image", mlx_cache_image(side, seed=side + 1), P1, "MISS",
                   f"another {side}x{side} image")
    mlx_cache.check()


def test_cache_same_size_images(mlx_cache: Any, mlx_cache_image: Any) -> None:
    """Two images of one size have identical placeholder tokens: keys on token ids alone fail."""
    a, b = mlx_cache_image(448, seed=21), mlx_cache_image(448, seed=22)
    mlx_cache.step("image A", a, P1, "MISS", "448x448 image A, prompt 1")
    mlx_cache.step("image B, other prompt", b, P2, "MISS",
                   "448x448 image B, prompt 2: same placeholder tokens as A")
    mlx_cache.step("image A, prompt 2", a, P2, "MISS", "image A with prompt 2")
    mlx_cache.check()


def test_cache_image_order(mlx_cache: Any, mlx_cache_image: Any) -> None:
    a, b = mlx_cache_image(224, seed=31), mlx_cache_image(224, seed=32)
    mlx_cache.step("[A, B]", [a, b], P1, "MISS", "two images, A first")
    mlx_cache.step("[B, A]", [b, a], P1, "MISS", "the same two images, B first")
    mlx_cache.step("[A, B] again", [a, b], P1, "HIT", "A first again")
    mlx_cache.check()


def test_cache_changed_bytes_same_path(mlx_cache: Any, mlx_cache_image: Any, tmp_path: Any) -> None:
    import shutil

    path = tmp_path / "photo.png"
    shutil.copyfile(mlx_cache_image(336, seed=41), path)
    mlx_cache.step("first", path, P1, "MISS", "photo.png")
    shutil.copyfile(mlx_cache_image(336, seed=42), path)
    mlx_cache.step("same path, new bytes", path, P1, "MISS", "photo.png overwritten with another image")
    mlx_cache.check()
