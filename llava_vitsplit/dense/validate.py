"""Check a dense split before training: every image and label opened once, in parallel, every problem listed.

Problems (``kind``): ``missing-pair`` (an image without its label / depth map, or a listed file absent),
``unreadable`` (PIL cannot decode it), ``wrong-mode`` (a label that is not single-channel),
``size-mismatch`` (label or depth map not the image's size; a COCO image not its declared size),
``class-id`` (ids outside ``0..K-1`` other than the ignore index; COCO categories outside ``1..K-1``),
``empty-label`` (only the ignore index), ``bit-depth`` (a depth PNG that is not 16-bit),
``all-zero-depth``, ``missing-image`` (a COCO image listed in the annotations but absent) and
``empty-mask`` (a COCO annotation whose mask covers no pixel). The checks call the same loaders as the
datasets, so what passes here loads in training. What a split holds and how one sample is checked is the
task's (``DenseTaskSpec.split_files``: ``tasks.pairs`` for image/target pairs, ``validate_coco``).

``cached_validation`` stores the report in a JSON file keyed on the check settings and every file's
path, size and modification time, so restarting a run does not re-read the data.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llava_vitsplit.dense.presets import DensePreset
from llava_vitsplit.dense.tasks import SplitFiles, task_spec
from llava_vitsplit.util.atomic import write_json
from llava_vitsplit.util.pil import truncation_is_an_error

CHECK_VERSION = 1  # bump when a check changes, so old cached reports are not reused


@dataclass(frozen=True)
class Problem:
    sample: str  # the sample's image path: what --skip-bad-samples leaves out
    path: str  # the offending file
    kind: str
    detail: str

    def line(self) -> str:
        return f"{self.kind:<15} {self.detail}"


@dataclass
class DataReport:
    split: str
    num_samples: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_samples(self) -> frozenset[str]:
        return frozenset(p.sample for p in self.problems)

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(p.kind for p in self.problems).items()))

    def summary(self) -> str:
        if self.ok:
            return f"split {self.split!r}: {self.num_samples} sample(s) checked, no problems"
        counts = ", ".join(f"{k} {n}" for k, n in self.counts().items())
        return (
            f"split {self.split!r}: {self.num_samples} sample(s) checked, {len(self.problems)} problem(s) "
            f"in {len(self.bad_samples)} sample(s) ({counts})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "problem_counts": self.counts()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataReport:
        return cls(data["split"], data["num_samples"], [Problem(**p) for p in data["problems"]])


class BadDataError(ValueError):
    """A split has problems and the run was not told to skip them; the message lists every one."""

    def __init__(self, reports: list[DataReport]) -> None:
        lines = [p.line() for r in reports for p in r.problems] + [r.summary() for r in reports]
        super().__init__(
            "bad samples found before the run started (nothing was run); fix these files or pass "
            "--skip-bad-samples to leave those samples out:\n" + "\n".join(lines)
        )
        self.reports = reports


def _run_parallel(check, items: list, workers: int | None, desc: str, progress: bool) -> list[Problem]:
    from tqdm.contrib.concurrent import thread_map

    if not items:
        return []
    workers = workers or min(8, os.cpu_count() or 1)
    with truncation_is_an_error():
        results = thread_map(
            check, items, max_workers=workers, desc=desc, disable=not progress, unit="sample"
        )
    return [p for found in results for p in found]


def split_files(preset: DensePreset, root: str | Path, split: str, layout: str | None) -> SplitFiles:
    """The split's samples and their check, as the preset's task lists them (``DenseTaskSpec.split_files``)."""
    return task_spec(preset).split_files(preset, Path(root), split, layout or preset.dataset)


def validate_split(
    preset: DensePreset,
    root: str | Path,
    split: str,
    layout: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> DataReport:
    """Every problem of ``split`` (never raises on a bad sample; a missing folder or list still raises)."""
    return _validate_files(split, split_files(preset, root, split, layout), workers, progress)


def _validate_files(split: str, files: SplitFiles, workers: int | None, progress: bool) -> DataReport:
    problems = [
        Problem(str(image), str(absent), "missing-pair", _missing_detail(image, absent))
        for image, absent in files.missing
    ]
    problems += _run_parallel(
        lambda sample: [Problem(*p) for p in files.check(sample)],
        files.samples,
        workers,
        f"checking {split}",
        progress,
    )
    return DataReport(split, len(files.samples) + len(files.missing), problems)


def _missing_detail(image: Path, absent: Path) -> str:
    return f"{absent} is missing" + ("" if absent == image else f" (the pair of {image})")


def _stat(path: Path) -> list[Any]:
    try:
        info = path.stat()
    except OSError:
        return [str(path), None, None]
    return [str(path), info.st_size, info.st_mtime_ns]


def cache_key(
    preset: DensePreset, root: str | Path, split: str, layout: str | None, files: SplitFiles
) -> str:
    """Hash of the check settings and every file's path, size and mtime (a changed file invalidates)."""
    absent = [str(a) for _, a in files.missing]
    settings = {
        "version": CHECK_VERSION,
        "root": str(Path(root).resolve()),
        "split": split,
        "layout": layout or preset.dataset,
        "task": preset.task,
        "num_classes": preset.num_classes,
        "ignore_index": preset.ignore_index,
        "reduce_zero_label": preset.reduce_zero_label,
        "depth_scale": preset.depth_scale,
    }
    blob = json.dumps([settings, [_stat(Path(p)) for p in files.paths], absent]).encode()
    return hashlib.sha256(blob).hexdigest()


def cached_validation(
    preset: DensePreset,
    root: str | Path,
    split: str,
    layout: str | None,
    cache_file: str | Path,
    workers: int | None = None,
    progress: bool = True,
) -> DataReport:
    """``validate_split``, reusing ``cache_file`` when no file or setting changed since it was written."""
    cache_file = Path(cache_file)
    files = split_files(preset, root, split, layout)
    key = cache_key(preset, root, split, layout, files)
    if cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text())
            if cached.get("key") == key:
                return DataReport.from_dict(cached["report"])
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # a damaged cache is rebuilt
    report = _validate_files(split, files, workers, progress)
    write_json(cache_file, {"key": key, "report": report.to_dict()})
    return report
