"""Datasets for a preset (its task's layouts, train/eval transforms and targets: ``dense.tasks``), collation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llava_vitsplit.backbones.normalization import backbone_normalization
from llava_vitsplit.backbones.registry import Normalization
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
    normalization: Normalization | None = None,
):
    """The preset's dataset for ``split``; ``layout`` overrides ``preset.dataset`` (e.g. ``folder``).

    ``skip``: image paths of samples to leave out (``DataReport.bad_samples``); with it, images whose
    label is missing are left out too instead of raising. Transforms and targets: the task's spec.
    ``normalization``: the backbone's input mean/std (the trainer passes the run's, evaluation the
    checkpoint's); ``None``: the preset backbone family's (``backbones.normalization``).
    """
    missing = [] if skip else None
    normalization = normalization or backbone_normalization(preset.backbone)
    return task_spec(preset).dataset(
        preset, Path(root), split, train, layout or preset.dataset, missing, skip, normalization
    )


def collate(batch: list[Any]):
    """Stack dict items; keep detection ``(image, target)`` pairs as lists (the trainer uses its task's
    ``collate``; this one takes either kind of item)."""
    return collate_detection(batch) if isinstance(batch[0], tuple) else collate_items(batch)
