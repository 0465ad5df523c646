"""Test images: the synthetic pattern, users' images resized, and images that cannot be opened."""

import PIL.Image
import pytest
from PIL import Image

from pytest_mlxvlm.config.settings import Resolution
from pytest_mlxvlm.measure.images import ImageError, image_file, open_image, synthetic_image


def test_synthetic_image_is_deterministic_per_seed():
    size = Resolution(64, 48)
    a, again = synthetic_image(size, seed=1), synthetic_image(size, seed=1)
    assert a.size == (64, 48) and a.mode == "RGB"
    assert a.tobytes() == again.tobytes()
    assert synthetic_image(size, seed=2).tobytes() != a.tobytes()
    assert synthetic_image(size).tobytes() == synthetic_image(size, seed=0).tobytes()


@pytest.mark.parametrize("width, height", [(1, 1), (3, 200), (1920, 1080)])
def test_synthetic_image_at_any_size(width, height):
    assert synthetic_image(Resolution(width, height)).size == (width, height)


def test_image_file_is_written_once_with_no_temp_file(tmp_path):
    path = image_file(Resolution(32, 32), tmp_path)
    assert path.name == "synthetic-32x32.png"
    with Image.open(path) as img:
        assert img.size == (32, 32)
        assert img.convert("RGB").tobytes() == synthetic_image(Resolution(32, 32)).tobytes()
    stamp = path.stat().st_mtime_ns
    assert image_file(Resolution(32, 32), tmp_path) == path and path.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic-32x32.png"]


def test_a_users_image_is_resized(tmp_path):
    Image.new("RGB", (50, 40), (200, 10, 10)).save(tmp_path / "red.png")
    (tmp_path / "out").mkdir()
    path = image_file(Resolution(64, 48), tmp_path / "out", tmp_path / "red.png")
    assert path.name == "red-64x48.png"
    with Image.open(path) as img:
        assert img.size == (64, 48) and img.getpixel((5, 5)) == (200, 10, 10)


def test_a_grey_image_opens_as_rgb(tmp_path):
    Image.new("L", (8, 8), 99).save(tmp_path / "grey.png")
    img = open_image(tmp_path / "grey.png")
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (99, 99, 99)


@pytest.mark.parametrize("mode, values, expected", [
    ("I;16", [0, 257 * 100, 65535], [0, 100, 255]),  # a 16-bit greyscale PNG: scaled, not clipped
    ("I", [0, 257 * 100, 65535], [0, 100, 255]),
    ("I", [0, 100, 255], [0, 100, 255]),  # 8-bit values in a 32-bit image: kept
    ("F", [0.0, 100 / 255, 1.0], [0, 100, 255]),  # floats from 0 to 1
    ("F", [-1.0, 0.0, 1.0], [0, 128, 255]),  # any other range: stretched
])
def test_deep_greyscale_keeps_its_picture(tmp_path, mode, values, expected):
    import numpy as np

    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    img = Image.fromarray(np.array([values], dtype=dtype), mode) if mode != "I;16" else \
        Image.fromarray(np.array([values], dtype=dtype))
    path = tmp_path / ("deep.png" if mode == "I;16" else "deep.tif")  # PNG holds 16 bits, TIFF 32
    img.save(path)
    opened = open_image(path)
    assert [opened.getpixel((x, 0)) for x in range(3)] == [(v, v, v) for v in expected]


def test_a_16_bit_picture_is_not_lost_to_white(tmp_path):
    import numpy as np

    gradient = np.linspace(0, 65535, 256 * 256).reshape(256, 256).astype(np.uint16)
    Image.fromarray(gradient).save(tmp_path / "g16.png")
    rgb = np.asarray(open_image(tmp_path / "g16.png"))
    assert (rgb == 255).all(axis=-1).mean() < 0.01  # PIL's own conversion: 99.6% white
    assert rgb.mean() == pytest.approx(127.5, abs=1)


def test_a_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="it is a folder; give one image file"):
        open_image(tmp_path)


@pytest.mark.parametrize("content, reason", [
    (None, "no such file"),
    (b"not a png", "not an image format PIL can read"),
])
def test_an_image_that_cannot_be_opened_is_one_line(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError) as exc:
        open_image(path)
    assert str(exc.value) == f"cannot open image {str(path)!r}: {reason}"
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_a_decompression_bomb_is_an_image_error(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    Image.new("RGB", (100, 100)).save(bomb)  # 10,000 pixels ...
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)  # ... far beyond twice the limit
    with pytest.raises(ImageError, match="too many pixels to decode safely") as exc:
        open_image(bomb)
    assert not isinstance(exc.value, Image.DecompressionBombError)
    assert str(bomb) in str(exc.value)
    with pytest.raises(ImageError):  # --mlx-image goes through the same door
        image_file(Resolution(16, 16), tmp_path, bomb)
