"""Resumable steps: a step reruns only when its settings changed or one of its outputs is missing.

Each finished step leaves a stamp ``<folder>/<step>.json`` (its settings and run time), written atomically
after the step's own outputs, so a run killed mid-step redoes that step and nothing before it. Used by the
quickstart pipeline and the easy-vqa converter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llava_vitsplit.util.atomic import write_json


class StepCache:
    """The stamps of one run's steps under ``folder`` (``force``: every step counts as not done)."""

    def __init__(self, folder: str | Path, force: bool = False) -> None:
        self.folder = Path(folder)
        self.force = force

    def stamp(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def finished(self, name: str, settings: Any, outputs: list[Path]) -> dict | None:
        """The stamp of ``name`` if it finished with ``settings`` and all ``outputs`` exist, else None."""
        stamp = self.stamp(name)
        if self.force or not stamp.is_file() or not all(Path(p).exists() for p in outputs):
            return None
        done = json.loads(stamp.read_text())
        return done if done.get("settings") == settings else None

    def run(self, name: str, settings: Any, outputs: list[Path], fn: Callable[[], None]) -> float | None:
        """Run ``fn`` unless ``name`` is finished; returns its seconds, or None when it was skipped."""
        if self.finished(name, settings, outputs) is not None:
            return None
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        write_json(self.stamp(name), {"settings": settings, "seconds": seconds})
        return seconds

    def finished_at(self, name: str) -> float | None:
        """When ``name`` last finished (its stamp's mtime), so later steps can rerun after it reran."""
        stamp = self.stamp(name)
        return stamp.stat().st_mtime if stamp.is_file() else None
