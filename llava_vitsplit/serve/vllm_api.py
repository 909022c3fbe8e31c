"""The process ``llava-vitsplit serve`` runs: vLLM's OpenAI server, with oversized images refused as a 400.

vLLM refuses an image whose header declares more than ``VLLM_MAX_IMAGE_PIXELS`` pixels with a 400 that
names its size, but PIL checks first, inside ``Image.open``, and its decompression-bomb error reaches the
client as a 500 (vLLM 0.32, for anything over 179 MP). Here, in the server process only, vLLM's limit
defaults to the project's (``DEFAULT_MAX_PIXELS``, as the demo and ``answer``; an explicit
``VLLM_MAX_IMAGE_PIXELS`` wins) and PIL leaves the check to it: both read the header alone, so no
oversized image is decoded. With ``VLLM_MAX_IMAGE_PIXELS=0`` (vLLM's "no limit") PIL keeps its own.
"""

from __future__ import annotations

import os
import runpy

from llava_vitsplit.serve.images import DEFAULT_MAX_PIXELS

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
MAX_PIXELS_VARIABLE = "VLLM_MAX_IMAGE_PIXELS"


def use_vllm_pixel_limit(environ: dict | None = None) -> int:
    """Set vLLM's pixel limit (unless set) and hand PIL's check to it; returns the limit (0: none)."""
    from PIL import Image

    environ = os.environ if environ is None else environ
    environ.setdefault(MAX_PIXELS_VARIABLE, str(DEFAULT_MAX_PIXELS))
    limit = int(environ[MAX_PIXELS_VARIABLE])
    if limit > 0:
        Image.MAX_IMAGE_PIXELS = None  # vLLM's check (a 400) runs right after Image.open reads the header
    return limit


def main() -> None:
    use_vllm_pixel_limit()
    runpy.run_module(SERVER_MODULE, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
