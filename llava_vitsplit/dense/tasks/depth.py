"""The ``depth`` task: metres from ``DepthHead``, SigLoss, depth errors (inside ``eval_crop``), 16-bit PNGs."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from llava_vitsplit.backbones.registry import Normalization
from llava_vitsplit.dense.data import DepthDataset, depth_pairs, load_depth
from llava_vitsplit.dense.heads import DepthHead
from llava_vitsplit.dense.losses import sig_loss
from llava_vitsplit.dense.metrics import DepthMetric
from llava_vitsplit.dense.presets import DensePreset
from llava_vitsplit.dense.tasks.pairs import kept_pairs, pair_split, pair_transform
from llava_vitsplit.dense.tasks.spec import BranchHead, DenseTaskSpec, ProblemTuple, SplitFiles, collate_items
from llava_vitsplit.dense.visualize import save_depth, save_depth_colour


def depth_dataset(
    preset: DensePreset,
    root: Path,
    split: str,
    train: bool,
    layout: str,
    missing: list | None,
    skip: frozenset[str],
    normalization: Normalization,
) -> DepthDataset:
    """Items ``{"pixel_values", "depth" [H, W] metres, "path"}``; crops are padded with 0 (invalid)."""
    pairs = kept_pairs(depth_pairs(root, layout, split, missing), skip)
    transform = pair_transform(preset, train, fill=0.0, normalization=normalization)
    return DepthDataset(pairs, preset.depth_scale, transform)


def depth_problems(image: Path, path: Path, depth: np.ndarray) -> list[ProblemTuple]:
    if not depth.any():
        return [(str(image), str(path), "all-zero-depth", f"depth map {path} is all zeros")]
    return []


def depth_split(preset: DensePreset, root: Path, split: str, layout: str) -> SplitFiles:
    read = partial(load_depth, depth_scale=preset.depth_scale)
    return pair_split(depth_pairs, root, layout, split, read, "depth map", depth_problems)


class CroppedDepthErrors:
    """Depth errors of ``pred [1, H, W]`` against ``gt [H, W]``, inside ``preset.eval_crop`` when gt is large enough."""

    def __init__(self, preset: DensePreset) -> None:
        self.metric = DepthMetric(preset.min_depth, preset.max_depth)
        self.eval_crop = preset.eval_crop

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        depth_pred, depth_gt = pred[0], target  # [H, W]
        if self.eval_crop is not None:
            top, bottom, left, right = self.eval_crop
            if depth_gt.shape[-2] >= bottom and depth_gt.shape[-1] >= right:
                depth_pred = depth_pred[top:bottom, left:right]
                depth_gt = depth_gt[top:bottom, left:right]
        self.metric.update(depth_pred, depth_gt)

    def compute(self) -> dict:
        return self.metric.compute()


def write_depth(pred: torch.Tensor, preset: DensePreset, folder: Path, stem: str) -> None:
    """``<stem>_depth.png`` (16-bit, ``depth_scale`` units) and ``<stem>_depth_colour.png`` of ``pred [1, H, W]``."""
    save_depth(pred[0], folder / f"{stem}_depth.png", preset.depth_scale)
    save_depth_colour(pred[0], folder / f"{stem}_depth_colour.png", preset.max_depth)


DEPTH = DenseTaskSpec(
    name="depth",
    dataset=depth_dataset,
    collate=collate_items,
    split_files=depth_split,
    branch=BranchHead(
        head=lambda preset, channels: DepthHead(channels, min_depth=preset.min_depth),
        target="depth",
        loss=lambda pred, depth, preset: sig_loss(pred, depth, preset.min_depth, preset.max_depth),
        metric=CroppedDepthErrors,
        write=write_depth,
    ),
)
