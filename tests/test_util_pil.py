"""Strict decoding stays strict across threads even when another library turned truncation tolerance on."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageFile

from llava_vitsplit.data.images import ImageDecodeError, decode_rgb
from llava_vitsplit.util.pil import truncation_is_an_error


@pytest.fixture
def tolerant_pil():
    """PIL as lmms-eval leaves it on import: truncated files load padded with grey."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    yield
    ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _truncated_png(tmp_path, index: int):
    pixels = np.random.default_rng(index).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    path = tmp_path / f"{index}.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def test_truncated_files_raise_in_every_thread(tolerant_pil, tmp_path):
    paths = [_truncated_png(tmp_path, i) for i in range(8)] * 25

    def outcome(path):
        try:
            decode_rgb(path, str(path))
        except ImageDecodeError:
            return "refused"
        return "decoded"

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(outcome, paths))
    assert results.count("decoded") == 0
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the other library's setting is restored afterwards


def test_nested_guards_restore_the_outer_setting(tolerant_pil):
    with truncation_is_an_error():
        with truncation_is_an_error():
            assert ImageFile.LOAD_TRUNCATED_IMAGES is False
        assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True
