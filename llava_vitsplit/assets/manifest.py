"""Checksum manifests that make an asset folder a verifiable cache.

``MANIFEST.json`` in an asset folder records the sha256 of every file in it, the source it was built from
and the result of its verification. A folder is reused only when the manifest exists, names the same
source, and every listed file still has its recorded hash.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llava_vitsplit.assets.sources import sha256_file

MANIFEST_NAME = "MANIFEST.json"


def write_manifest(folder: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Hash every file in ``folder`` (except the manifest) and write ``MANIFEST.json``; returns it."""
    files = {
        str(path.relative_to(folder)): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
    if not files:
        raise ValueError(f"{folder}: refusing to write a manifest for an empty folder")
    manifest = {**info, "files": files}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when there is none or it is unreadable."""
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def verify_manifest(folder: Path, source: dict[str, Any] | None = None) -> list[str]:
    """Problems that make the cached folder unusable (empty list = valid cache).

    ``source``: when given, the manifest's ``source`` entry must equal it (same package file).
    """
    manifest = read_manifest(folder)
    if manifest is None:
        return [f"{folder / MANIFEST_NAME}: missing or unreadable"]
    problems = []
    if source is not None and manifest.get("source") != source:
        problems.append(f"built from {manifest.get('source')}, now the source is {source}")
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: sha256 differs from the manifest")
    return problems
