"""Evaluation of a dense model on a split: the metric of the preset's task (``dense.tasks``).

mIoU for segmentation, depth errors (inside ``eval_crop``) for depth, COCO box / mask AP for detection;
each task's spec holds its metric and evaluation loop.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from llava_vitsplit.dense.presets import DensePreset
from llava_vitsplit.dense.tasks import task_spec


def evaluate_dense(
    model: nn.Module, preset: DensePreset, dataset, device: torch.device, max_images: int | None = None
) -> dict[str, Any]:
    """Metrics of ``model`` (branch ``preset.name`` of a ``DenseModel``, or the task's own model) over
    ``dataset`` (eval transforms, targets at full size), with ``images`` = how many were evaluated."""
    return task_spec(preset).evaluate(model, preset, dataset, device, max_images)
