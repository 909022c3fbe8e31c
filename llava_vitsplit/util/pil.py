"""Strict PIL decoding that treats truncated files as errors, safe to use from many threads at once.

PIL decides whether a truncated file is an error from one process-wide switch,
``ImageFile.LOAD_TRUNCATED_IMAGES``, which some libraries (lmms-eval, on import) turn on. A plain
save/set/restore around each decode is not thread-safe: one thread can restore ``True`` while another is
still decoding. Here the first strict decoder saves the switch and sets it off, concurrent decoders only
count themselves, and the last one to leave restores the saved value.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import ImageFile

_LOCK = threading.Lock()
_active = 0
_saved = False


@contextmanager
def truncation_is_an_error() -> Iterator[None]:
    """While inside (in any thread), decoding a truncated file raises instead of padding it with grey."""
    global _active, _saved
    with _LOCK:
        if _active == 0:
            _saved = ImageFile.LOAD_TRUNCATED_IMAGES
        _active += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        with _LOCK:
            _active -= 1
            if _active == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _saved
