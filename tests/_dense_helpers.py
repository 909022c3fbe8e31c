"""Helpers shared by the dense command tests: preset files and ``dense-train`` argument lists."""

from __future__ import annotations

import json
from pathlib import Path


def preset_file(folder: Path, preset) -> str:
    path = Path(folder) / f"{preset.name}.json"
    path.write_text(json.dumps(preset.to_dict()))
    return str(path)


def train_argv(preset: str, root: Path, run: Path, *extra: str) -> list[str]:
    """``dense-train`` on CPU without workers; ``extra`` flags are appended."""
    return [
        "dense-train",
        "--preset",
        preset,
        "--data-root",
        str(root),
        "--output-dir",
        str(run),
        "--num-workers",
        "0",
        *extra,
    ]


def log_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines()]
