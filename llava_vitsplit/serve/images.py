"""Load and validate user images from a file path, an http(s) URL or an already opened PIL image.

Every failure (missing file, not an image, truncated data, absurd dimensions, download too large)
raises :class:`ImageLoadError` whose message names the source, so callers can show it to the user
(a chat message in the demo, an error line in the CLI) instead of a traceback. Dimensions are checked
from the header *before* decoding, so a decompression bomb is refused without allocating it.
"""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image

from llava_vitsplit.data.images import ImageDecodeError, check_dimensions, decode_rgb, to_rgb

# 89 MP: a 48 MP (8000x6000) or 64 MP (9248x6936) phone photo at full resolution passes, while a
# decompression bomb is refused from its header; one image at the limit decodes to 267 MB of RGB, and
# the limit stays under PIL's own bomb threshold (89.5 MP, above which PIL warns on every open).
DEFAULT_MAX_PIXELS = 89_000_000
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
URL_TIMEOUT_S = 15.0


class ImageLoadError(ValueError):
    """An image could not be used; the message is meant for the end user."""


def size_text(size: int) -> str:
    """``size`` bytes for a person: "20.0 MB", "300.0 KB" or "12 bytes"."""
    if size >= 2**20:
        return f"{size / 2**20:.1f} MB"
    return f"{size / 2**10:.1f} KB" if size >= 2**10 else f"{size} bytes"


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _read_url(url: str, max_bytes: int, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "llava-vitsplit"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(max_bytes + 1)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ImageLoadError(f"could not download image {url}: {exc}") from exc
    if len(data) > max_bytes:
        raise ImageLoadError(f"image {url} is larger than {max_bytes} bytes")
    return data


def load_image(
    source: str | Path | Image.Image,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = URL_TIMEOUT_S,
    display_name: str | None = None,
) -> Image.Image:
    """Open ``source`` (path, URL or PIL image), validate it and return a decoded RGB image.

    ``display_name`` replaces the source in error messages (e.g. the user's file name, not a temp path).
    """
    if isinstance(source, Image.Image):
        try:
            check_dimensions(source, "<in-memory image>", max_pixels)
        except ImageDecodeError as exc:
            raise ImageLoadError(str(exc)) from exc
        return to_rgb(source)
    source = str(source)
    name = display_name or source
    if is_url(source):
        stream: io.BytesIO | Path = io.BytesIO(_read_url(source, max_bytes, timeout))
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ImageLoadError(f"image file not found: {name}")
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageLoadError(
                f"image file {name} is {size_text(size)}, over the {size_text(max_bytes)} limit"
            )
        stream = path
    try:
        return decode_rgb(stream, name, max_pixels)
    except ImageDecodeError as exc:
        raise ImageLoadError(str(exc)) from exc
