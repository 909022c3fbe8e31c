"""Robust image loading: any file PIL can decode becomes an 8-bit RGB image, or a ``DataProblem``.

Handled: grayscale (``L``, ``LA``), palette (``P``), ``RGBA`` (composited on white, not on the arbitrary
colour hidden under transparent pixels), ``CMYK``, and 16/32-bit integer images (``I;16``, ``I``,
scaled from their bit depth to 8 bits instead of being clipped to white). Missing, unreadable,
corrupt and truncated files raise ``DataProblem`` with the sample id and path.

``decode_rgb`` is the one decoder, shared with the serving code: it checks the dimensions from the header
before decoding (so a decompression bomb is refused without allocating it), decodes fully, and treats
truncated data as an error even when another library has set PIL's process-wide
``ImageFile.LOAD_TRUNCATED_IMAGES`` (lmms-eval does, on import).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from llava_vitsplit.data.records import DataProblem
from llava_vitsplit.util.pil import truncation_is_an_error


def to_rgb(image: Image.Image) -> Image.Image:
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


class ImageDecodeError(ValueError):
    """An image file that cannot be used; the message names it."""


def check_dimensions(image: Image.Image, name: str, max_pixels: int | None = None) -> None:
    """Refuse an image with an empty side or more than ``max_pixels`` pixels (header only, no decode)."""
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageDecodeError(f"image {name} has an empty side ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageDecodeError(
            f"image {name} is {width}x{height} pixels, over the limit of {max_pixels} pixels"
        )


def decode_rgb(source: str | Path | BinaryIO, name: str, max_pixels: int | None = None) -> Image.Image:
    """Fully decode ``source`` into an 8-bit RGB image or raise ``ImageDecodeError`` naming ``name``."""
    try:
        with truncation_is_an_error(), Image.open(source) as image:
            check_dimensions(image, name, max_pixels)
            image.load()
            rgb = to_rgb(image)
            rgb.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image {name} has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{name} is not an image file PIL can read") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated data, bad headers, decoder errors
        raise ImageDecodeError(f"image {name} is corrupt or truncated: {exc}") from exc
    return rgb


def load_image(path: str | Path, record_id: str, max_pixels: int | None = None) -> Image.Image:
    """Decode a dataset image as RGB; any problem becomes a ``DataProblem`` for ``record_id``."""
    path = Path(path)
    if not path.is_file():
        raise DataProblem(record_id, "missing_image", f"image file not found: {path}")
    try:
        return decode_rgb(path, str(path), max_pixels)
    except ImageDecodeError as exc:
        raise DataProblem(record_id, "corrupt_image", str(exc)) from exc
