"""Atomic files and folders for everything a dense run leaves: write under a temporary name, then rename.

Temporary names start with a dot and contain ``.tmp`` (``.<name>.tmp-<pid>``), so a crash never leaves a
truncated file under its real name and ``remove_stale_temporaries`` can clear what a killed run left.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def temporary_name(path: Path) -> Path:
    """The hidden sibling a write of ``path`` goes through (``.<name>.tmp-<pid>``)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and ".tmp" in path.name


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` (a file, or a folder it fills) and rename ``tmp`` to ``path``; ``path`` is replaced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    _remove(tmp)
    try:
        write(tmp)
        publish(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)
    return path


def publish(tmp: Path, path: Path) -> None:
    """Rename the finished ``tmp`` (file or folder) to ``path``, replacing what is there."""
    if tmp.is_dir() and path.exists():  # a folder cannot replace a non-empty folder in one rename
        old = path.with_name(f".{path.name}.tmp-old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)


def write_json(path: str | Path, data: Any, indent: int = 2) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=indent) + "\n"))


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """One JSON object a line."""
    return write_atomic(path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in rows)))


def write_lines(path: str | Path, lines: list[str]) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in lines)))


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files and folders a killed run left in ``folder``; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if is_temporary(p))
    for path in stale:
        _remove(path)
    return stale
