"""The ``segmentation`` task: class logits from ``SegmentationHead``, pixel cross-entropy, mIoU, palette PNGs."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from llava_vitsplit.backbones.registry import Normalization
from llava_vitsplit.dense.data import SegmentationDataset, decode_label, segmentation_pairs, unknown_class_ids
from llava_vitsplit.dense.heads import SegmentationHead
from llava_vitsplit.dense.losses import segmentation_loss
from llava_vitsplit.dense.metrics import SegmentationMetric
from llava_vitsplit.dense.presets import DensePreset
from llava_vitsplit.dense.tasks.pairs import bad, kept_pairs, pair_split, pair_transform
from llava_vitsplit.dense.tasks.spec import BranchHead, DenseTaskSpec, ProblemTuple, SplitFiles, collate_items
from llava_vitsplit.dense.visualize import save_mask


def segmentation_dataset(
    preset: DensePreset,
    root: Path,
    split: str,
    train: bool,
    layout: str,
    missing: list | None,
    skip: frozenset[str],
    normalization: Normalization,
) -> SegmentationDataset:
    """Items ``{"pixel_values", "labels" [H, W], "path"}``; crops are padded with the ignore index."""
    pairs = kept_pairs(segmentation_pairs(root, layout, split, missing), skip)
    transform = pair_transform(preset, train, fill=preset.ignore_index, normalization=normalization)
    return SegmentationDataset(
        pairs, preset.num_classes, transform, preset.ignore_index, preset.reduce_zero_label
    )


def label_problems(image: Path, path: Path, label: np.ndarray, preset: DensePreset) -> list[ProblemTuple]:
    """``class-id`` (ids outside ``0..K-1`` but the ignore index) and ``empty-label`` (only the ignore index)."""
    problem = unknown_class_ids(
        label, path, preset.num_classes, preset.ignore_index, preset.reduce_zero_label
    )
    if problem is not None:
        return [bad(image, problem)]
    if (label == preset.ignore_index).all():
        detail = f"label {path} has only the ignore index {preset.ignore_index}: nothing to learn from"
        return [(str(image), str(path), "empty-label", detail)]
    return []


def segmentation_split(preset: DensePreset, root: Path, split: str, layout: str) -> SplitFiles:
    read = partial(decode_label, ignore_index=preset.ignore_index, reduce_zero_label=preset.reduce_zero_label)
    check = partial(label_problems, preset=preset)
    return pair_split(segmentation_pairs, root, layout, split, read, "label", check)


class ArgmaxIoU:
    """mIoU of the class with the highest score per pixel: ``update(scores [K, H, W], labels [H, W])``."""

    def __init__(self, preset: DensePreset) -> None:
        self.metric = SegmentationMetric(preset.num_classes, preset.ignore_index)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.metric.update(pred.argmax(0), target)  # [H, W]

    def compute(self) -> dict:
        return self.metric.compute()


def write_mask(pred: torch.Tensor, preset: DensePreset, folder: Path, stem: str) -> None:
    """``<stem>.png``: a palette PNG whose pixel values are the class ids of ``pred [K, H, W]``."""
    save_mask(pred.argmax(0), folder / f"{stem}.png", preset.num_classes)


SEGMENTATION = DenseTaskSpec(
    name="segmentation",
    dataset=segmentation_dataset,
    collate=collate_items,
    split_files=segmentation_split,
    needs_classes=True,
    branch=BranchHead(
        head=lambda preset, channels: SegmentationHead(channels, preset.num_classes),
        target="labels",
        loss=lambda pred, labels, preset: segmentation_loss(pred, labels, preset.ignore_index),
        metric=ArgmaxIoU,
        write=write_mask,
        loss_resizes=True,  # segmentation_loss resizes an UnresizedPrediction band by band
    ),
)
