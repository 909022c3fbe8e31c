"""Robust image loading: any file PIL can decode becomes an 8-bit RGB image, or a ``DataProblem``.

Handled: grayscale (``L``, ``LA``), palette (``P``), ``RGBA`` (composited on white, not on the arbitrary
colour hidden under transparent pixels), ``CMYK``, and 16/32-bit integer images (``I;16``, ``I``,
scaled from their bit depth to 8 bits instead of being clipped to white). Missing, unreadable,
corrupt and truncated files raise ``DataProblem`` with the sample id and path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from llava_vitsplit.data.records import DataProblem


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        array = np.asarray(image).astype(np.float64)  # [H, W]
        if mode == "F":
            peak = 1.0 if array.max(initial=0.0) <= 1.0 else 255.0
        else:
            peak = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        array = np.clip(np.rint(array / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, P, CMYK, YCbCr, 1, ...


def load_image(path: str | Path, record_id: str) -> Image.Image:
    """Decode ``path`` fully (so truncation is caught here, not in a worker mid-batch) as RGB."""
    path = Path(path)
    if not path.is_file():
        raise DataProblem(record_id, "missing_image", f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            rgb = _to_rgb(image)
            rgb.load()
    except UnidentifiedImageError as exc:
        raise DataProblem(record_id, "corrupt_image", f"{path}: not a readable image ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated data, bad headers, decoder errors
        raise DataProblem(record_id, "corrupt_image", f"{path}: {exc}") from exc
    if min(rgb.size) < 1:
        raise DataProblem(record_id, "corrupt_image", f"{path}: empty image {rgb.size}")
    return rgb
