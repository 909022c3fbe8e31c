"""Data mixtures: ``DATA_PATH=mix.yaml`` (or a JSON object) names sources and how much of each to use.

    sources:
      - name: llava_instruct            # unique
        file: llava_instruct_150k.json  # or files: [a.json, b.jsonl]
        image_folder: coco/train2017    # default: --image_folder
        template: vicuna_v1             # optional; stage 2 only (stage 1 always renders `plain`)
        fraction: 0.2                   # or count: 50000, or repeat: 2; none of them: all records

Relative paths are relative to the mixture file's folder. Each source's usable records (in file order,
after stage 1 leaves out text-only ones) give ``fraction`` x N, ``count`` or ``repeat`` x N samples:
whole copies of the source, then a random remainder drawn without replacement from a generator seeded
with the training seed and the source's name, kept in file order. The draw depends on nothing else,
so a resumed run continues the same one. A plain ``DATA_PATH`` (comma-separated ``.json``/``.jsonl``
files) is one source, ``data``, used whole.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MIXTURE_REPORT = "data_mixture.json"  # written to OUTPUT_DIR: the realised count of each source
AMOUNT_KEYS = ("fraction", "count", "repeat")
SOURCE_KEYS = {"name", "file", "files", "image_folder", "template", *AMOUNT_KEYS}
MIXTURE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class DataSource:
    """One named set of data files with its image folder, template and amount (at most one is set)."""

    name: str
    files: tuple[Path, ...]
    image_folder: Path | None = None
    template: str | None = None
    fraction: float | None = None
    count: int | None = None
    repeat: float | None = None

    def amount(self) -> str:
        for key in AMOUNT_KEYS:
            if getattr(self, key) is not None:
                return f"{key} {getattr(self, key)}"
        return "all"

    def target(self, available: int) -> int:
        """How many samples this source gives from ``available`` usable records."""
        if self.count is not None:
            return self.count
        share = self.fraction if self.fraction is not None else self.repeat
        return available if share is None else int(round(share * available))


def check_image_folder(image_folder: str | Path | None) -> None:
    """One clear error for a missing ``IMAGE_FOLDER`` (instead of one missing image per sample)."""
    if image_folder and not Path(image_folder).is_dir():
        raise FileNotFoundError(
            f"IMAGE_FOLDER {image_folder} does not exist or is not a folder "
            "(the data's image paths are relative to it)"
        )


def is_mixture(data_path: str | Path) -> bool:
    """A ``.yaml``/``.yml`` file, or a ``.json`` file holding an object (a data file holds a list)."""
    path = Path(data_path)
    if path.suffix in MIXTURE_SUFFIXES:
        return True
    if path.suffix != ".json" or not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{")


def _read_mixture(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"mixture file not found: {path}")
    import yaml

    text = path.read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text) if path.suffix in MIXTURE_SUFFIXES else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"mixture {path}: cannot be parsed ({exc})") from exc


def _amount_problems(entry: dict) -> list[str]:
    given = [key for key in AMOUNT_KEYS if entry.get(key) is not None]
    if len(given) > 1:
        return [f"give at most one of fraction/count/repeat (got {', '.join(given)})"]
    if not given:
        return []
    key, value = given[0], entry[given[0]]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return [f"{key} must be a number, got {value!r}"]
    if key == "fraction" and not 0 < value <= 1:
        return [f"fraction {value} is outside (0, 1]"]
    if key == "count" and (value < 0 or value != int(value)):
        return [f"count must be a whole number >= 0, got {value}"]
    if key == "repeat" and value <= 0:
        return [f"repeat must be > 0, got {value}"]
    return []


def _source(entry: Any, number: int, base: Path, image_folder: Path | None) -> tuple[DataSource | None, list]:
    """One source of the mixture file and the problems found in it (each naming the source)."""
    if not isinstance(entry, dict):
        return None, [f"source {number} is a {type(entry).__name__}, not a mapping"]
    name = str(entry.get("name") or "")
    label = f"source {name!r}" if name else f"source {number}"
    problems = [] if name else ["has no name"]
    unknown = sorted(set(entry) - SOURCE_KEYS)
    if unknown:
        problems.append(f"unknown key(s) {unknown} (use {sorted(SOURCE_KEYS)})")
    files = entry.get("files", entry.get("file"))
    files = [files] if isinstance(files, str) else files
    if not files or not all(isinstance(f, str) for f in files) or ("file" in entry and "files" in entry):
        problems.append("needs `file: PATH` or `files: [PATHS]` (one of them)")
        files = []
    paths = tuple(base / f for f in files)
    problems += [f"data file {p} not found" for p in paths if not p.is_file()]
    folder = base / entry["image_folder"] if entry.get("image_folder") else image_folder
    if folder is not None and not folder.is_dir():
        problems.append(f"image folder {folder} does not exist")
    template = entry.get("template")
    if template is not None:
        from llava_vitsplit.data.templates import template_names

        if template not in template_names():
            problems.append(f"template {template!r} is not one of {template_names()}")
    problems += _amount_problems(entry)
    if problems:
        return None, [f"{label}: {p}" for p in problems]
    amounts = {key: entry.get(key) for key in AMOUNT_KEYS}
    if amounts["count"] is not None:
        amounts["count"] = int(amounts["count"])
    return DataSource(name, paths, folder, template, **amounts), []


def load_mixture(path: str | Path, image_folder: str | Path | None = None) -> list[DataSource]:
    """The sources of a mixture file; every problem in it is reported in one ``ValueError``."""
    path = Path(path)
    data = _read_mixture(path)
    entries = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"mixture {path}: expected a mapping with a non-empty `sources:` list")
    default_folder = Path(image_folder) if image_folder else None
    sources, problems, seen = [], [], set()
    for number, entry in enumerate(entries, 1):
        source, found = _source(entry, number, path.parent, default_folder)
        problems += found
        name = entry.get("name") if isinstance(entry, dict) else None
        if name and name in seen:
            problems.append(f"source {name!r}: the name is used twice")
        seen.add(name)
        if source is not None:
            sources.append(source)
    if problems:
        raise ValueError(f"mixture {path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return sources


def resolve_sources(
    data_path: str | Path | list, image_folder: str | Path | None = None, *, templates: bool = True
) -> list[DataSource]:
    """The sources of ``DATA_PATH``: a mixture file's, or one source ``data`` of the listed files.

    ``templates=False`` (stage 1, whose captions always use ``plain``) drops the sources' templates.
    """
    paths = [data_path] if isinstance(data_path, str | Path) else list(data_path)
    if len(paths) == 1 and is_mixture(paths[0]):
        sources = load_mixture(paths[0], image_folder)
        return sources if templates else [replace(s, template=None) for s in sources]
    if any(is_mixture(p) for p in paths):
        raise ValueError(f"a mixture file must be the only DATA_PATH entry, got {[str(p) for p in paths]}")
    check_image_folder(image_folder)
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"data file(s) not found: {', '.join(missing)}")
    return [DataSource("data", tuple(Path(p) for p in paths), Path(image_folder) if image_folder else None)]


def draw(source: DataSource, available: int, seed: int) -> np.ndarray:
    """Positions (into the source's ``available`` usable records) of the samples it contributes."""
    wanted = source.target(available)
    if available == 0 or wanted == 0:
        return np.zeros(0, dtype=np.int64)
    copies, remainder = divmod(wanted, available)
    rng = np.random.default_rng([seed, zlib.crc32(source.name.encode())])
    extra = np.sort(rng.choice(available, size=remainder, replace=False))
    return np.concatenate([np.tile(np.arange(available), copies), extra]).astype(np.int64)


def record_draw(out_dir: str | Path, mixture: list[dict], resuming: bool, write: bool) -> Path:
    """Log each source's realised count and write them to ``out_dir/MIXTURE_REPORT`` (atomically).

    A resumed run must draw what the run it continues drew: a different draw (the data, the mixture or
    the seed changed) raises ``ValueError`` before any step, naming both.
    """
    from llava_vitsplit.util.atomic import write_json

    path = Path(out_dir) / MIXTURE_REPORT
    for entry in mixture:
        logger.info(
            "data source %s: %d samples (%s of %d usable records)",
            entry["name"],
            entry["samples"],
            entry["amount"],
            entry["usable"],
        )
    if resuming and path.is_file():
        before = json.loads(path.read_text())["sources"]
        if [(e["name"], e["samples"]) for e in before] != [(e["name"], e["samples"]) for e in mixture]:
            raise ValueError(
                f"the data draw differs from the one the resumed run made ({path}: "
                f"{[(e['name'], e['samples']) for e in before]}; now "
                f"{[(e['name'], e['samples']) for e in mixture]}): the data, the mixture or the seed changed"
            )
    if write:
        write_json(path, {"sources": mixture, "total": sum(e["samples"] for e in mixture)})
    return path


__all__ = [
    "MIXTURE_REPORT",
    "DataSource",
    "draw",
    "record_draw",
    "is_mixture",
    "load_mixture",
    "resolve_sources",
]
