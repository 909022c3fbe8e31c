"""The dense task registry: ``TASKS`` maps a preset's ``task`` to its ``DenseTaskSpec``.

Everything that differs between tasks (head or own model, loss, dataset and transforms, collation,
metric, ``dense-validate`` checks, what ``dense-predict`` writes) is in the task's spec; the trainer,
evaluation, validation, loading, parameter report and prediction look it up with ``task_spec(preset)``.
Adding a task is one entry here (or ``TASKS[spec.name] = spec``) plus its head module. Built in:

- ``segmentation`` (``tasks.segmentation``), ``depth`` (``tasks.depth``): ``DenseModel`` branches;
- ``detection`` (``tasks.mask_rcnn``): Mask R-CNN with the ViT-Split neck, its own model.
"""

from __future__ import annotations

from llava_vitsplit.dense.presets import DensePreset
from llava_vitsplit.dense.tasks.depth import DEPTH
from llava_vitsplit.dense.tasks.mask_rcnn import DETECTION
from llava_vitsplit.dense.tasks.segmentation import SEGMENTATION
from llava_vitsplit.dense.tasks.spec import (
    BranchHead,
    DenseTaskSpec,
    Metric,
    OwnModel,
    PredictOptions,
    SplitFiles,
    collate_items,
)

TASKS: dict[str, DenseTaskSpec] = {spec.name: spec for spec in (SEGMENTATION, DEPTH, DETECTION)}


def task_spec(preset: DensePreset) -> DenseTaskSpec:
    """The spec of ``preset.task``; an unknown task, or a missing ``num_classes``, raises naming the preset."""
    spec = TASKS.get(preset.task)
    if spec is None:
        raise ValueError(
            f"preset {preset.name!r}: unknown dense task {preset.task!r}; valid: {', '.join(TASKS)}"
        )
    if spec.needs_classes and preset.num_classes < 1:
        raise ValueError(f"preset {preset.name!r}: a {preset.task} preset needs num_classes >= 1")
    return spec


__all__ = [
    "TASKS",
    "BranchHead",
    "DenseTaskSpec",
    "Metric",
    "OwnModel",
    "PredictOptions",
    "SplitFiles",
    "collate_items",
    "task_spec",
]
