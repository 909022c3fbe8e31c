"""Datasets and loaders for a preset: layout lookup, train/eval transforms, collation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from llava_vitsplit.dense.data import (
    DepthDataset,
    SegmentationDataset,
    coco_dataset,
    coco_paths,
    depth_pairs,
    segmentation_pairs,
)
from llava_vitsplit.dense.presets import DensePreset
from llava_vitsplit.dense.transforms import ImageOnly, eval_image_transform, train_transform


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
    label is missing are left out too instead of raising.
    """
    layout = layout or preset.dataset
    missing = [] if skip else None
    if preset.task == "segmentation":
        pairs = _kept(segmentation_pairs(root, layout, split, missing), skip)
        transform = (
            train_transform(preset.crop_size, preset.test_size, preset.scale_range, fill=preset.ignore_index)
            if train
            else ImageOnly(eval_image_transform(preset.test_size))
        )
        return SegmentationDataset(
            pairs, preset.num_classes, transform, preset.ignore_index, preset.reduce_zero_label
        )
    if preset.task == "depth":
        pairs = _kept(depth_pairs(root, layout, split, missing), skip)
        transform = (
            train_transform(preset.crop_size, preset.test_size, preset.scale_range, fill=0.0)
            if train
            else ImageOnly(eval_image_transform(preset.test_size))
        )
        return DepthDataset(pairs, preset.depth_scale, transform)
    transforms = [v2.RandomHorizontalFlip()] if train else []
    transforms += [
        v2.ToImage(),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.SanitizeBoundingBoxes(),
    ]
    return coco_dataset(*coco_paths(root, split), v2.Compose(transforms), skip=skip)


def _kept(pairs: list[tuple[Path, Path]], skip: frozenset[str]) -> list[tuple[Path, Path]]:
    kept = [pair for pair in pairs if str(pair[0]) not in skip]
    if not kept:
        raise ValueError(f"no usable samples left: all {len(pairs)} are bad")
    return kept


def collate(batch: list[Any]):
    """Stack dense items; keep detection ``(image, target)`` pairs as lists (Mask R-CNN takes lists)."""
    if isinstance(batch[0], tuple):
        images, targets = zip(*batch, strict=True)
        return [img.as_subclass(torch.Tensor) for img in images], [
            {k: (v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
            for t in targets
        ]
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out
