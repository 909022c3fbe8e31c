"""Datasets for a preset (its task's layouts, train/eval transforms and targets: ``dense.tasks``), collation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llava_vitsplit.dense.presets import DensePreset
from llava_vitsplit.dense.tasks import collate_items, task_spec
from llava_vitsplit.dense.tasks.mask_rcnn import collate_detection


def build_dataset(
    preset: DensePreset,
    root: str | Path,
    split: str,
    train: bool,
    layout: str | None = None,
    skip: frozenset[str] = frozenset(),
):
    """The preset's dataset for ``split``; ``layout`` overrides ``preset.dataset`` (e.g. ``folder``).

    ``skip``: image paths of samples to leave out (``DataReport.bad_samples``); with it, images whose
    label is missing are left out too instead of raising. Transforms and targets: the task's spec.
    """
    missing = [] if skip else None
    return task_spec(preset).dataset(
        preset, Path(root), split, train, layout or preset.dataset, missing, skip
    )


def collate(batch: list[Any]):
    """Stack dict items; keep detection ``(image, target)`` pairs as lists (the trainer uses its task's
    ``collate``; this one takes either kind of item)."""
    return collate_detection(batch) if isinstance(batch[0], tuple) else collate_items(batch)
