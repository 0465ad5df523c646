"""Deterministic test images at any resolution, and users' own images resized."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..config.settings import Resolution

if TYPE_CHECKING:
    from PIL import Image


def synthetic_image(resolution: Resolution, seed: int = 0) -> Image.Image:
    """A reproducible RGB image: gradients, shapes and fine noise (no downloads)."""
    import numpy as np
    from PIL import Image, ImageDraw

    w, h = resolution.width, resolution.height
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack(
        [255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), 128 + 127 * np.sin((x + y) / 37.0)],
        axis=-1,
    )
    noise = rng.normal(0, 12, size=(h, w, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1 = min(w - 1, x0 + int(rng.integers(w // 16 + 1, w // 3 + 2)))
        y1 = min(h - 1, y0 + int(rng.integers(h // 16 + 1, h // 3 + 2)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
    return image


class ImageError(ValueError):
    """An image that cannot be opened."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB of any mode. 16-bit and 32-bit grayscale (``I;16``, ``I``) and float (``F``) are
    scaled into 8 bits by their range (PIL's own conversion clips them: a 16-bit picture would
    come out nearly all white)."""
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img.convert("RGB")
    import numpy as np
    from PIL import Image

    values = np.asarray(img, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode.startswith("I;16") or (low >= 0 and 255 < high <= 65535 and img.mode == "I"):
        scaled = values / 257.0  # 65535 -> 255
    elif img.mode == "F" and low >= 0 and high <= 1.0:
        scaled = values * 255.0
    elif low >= 0 and high <= 255:
        scaled = values
    else:  # another range: stretched over 0-255
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
    grey = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
    return grey.convert("RGB")


def open_image(path: Path) -> Image.Image:
    """Open a user's image as RGB, with a clear error if it is not an image."""
    from PIL import Image

    if Path(path).is_dir():
        raise ImageError(f"cannot open image {str(path)!r}: it is a folder; give one image file")
    try:
        with Image.open(path) as img:
            return _to_rgb(img)
    except FileNotFoundError:
        raise ImageError(f"cannot open image {str(path)!r}: no such file") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"cannot open image {str(path)!r}: too many pixels to decode safely "
                         f"({exc})") from None
    except (OSError, ValueError) as exc:
        reason = "not an image format PIL can read" if "identify" in str(exc) else str(exc)
        raise ImageError(f"cannot open image {str(path)!r}: {reason}") from None


def image_file(resolution: Resolution, directory: Path, source: Path | None = None) -> Path:
    """A PNG of the given size in ``directory``: the synthetic pattern or ``source`` resized."""
    stem = "synthetic" if source is None else f"{source.stem}"
    path = directory / f"{stem}-{resolution.id}.png"
    if not path.exists():
        if source is None:
            image = synthetic_image(resolution)
        else:
            from PIL import Image

            image = open_image(source).resize(
                (resolution.width, resolution.height), Image.Resampling.BICUBIC
            )
        tmp = path.with_suffix(".tmp.png")
        image.save(tmp)
        tmp.replace(path)
    return path
