"""Dense tasks (segmentation, depth, detection) on frozen DINOv2 / CLIP towers with the ViT-Split adapter.

The adapter is imported from ``llava_vitsplit.adapter`` (the one implementation shared with the VLM);
nothing here imports the VLM, the LLM code or the training/serving modules of the VLM.

- ``presets``: the paper's configurations as data; ``dense_presets()``, ``dense_param_report(name)``.
- ``tasks``: the task registry (``TASKS``, one ``DenseTaskSpec`` per task: head or own model, loss,
  dataset and transforms, metric, data checks, prediction writer); everything below looks it up.
- ``build``/``model``/``heads``/``detection``: backbone + adapter + heads, multi-task ``DenseModel``,
  Mask R-CNN with the ViT-Split neck.
- ``data``/``transforms``/``pipeline``: standard dataset layouts and augmentation.
- ``validate``/``validate_coco``: every problem of a split, found before training (``dense-validate``).
- ``trainer``/``optim``/``checkpoint``/``loading``: accelerate training, schedules, checkpoints of
  safetensors + JSON + weights-only state; ``resume``: exact resume; ``legacy``: converting old pickles;
  ``atomic``: temporary-file-and-rename writes.
- ``metrics``/``evaluation``/``inference``/``visualize``: mIoU, depth errors, COCO AP, sliding window, PNGs.
- ``cka``: linear CKA between layers. Generated sets and a tiny preset for tests are in
  ``llava_vitsplit.testing.dense_synthetic``.
"""

from llava_vitsplit.dense.presets import DensePreset, dense_presets, get_dense_preset


def dense_param_report(name):
    """Parameter counts per component of a dense preset (``llava_vitsplit.dense.param_report``; imported on use)."""
    from llava_vitsplit.dense.param_report import dense_param_report as report

    return report(name)


__all__ = ["DensePreset", "dense_param_report", "dense_presets", "get_dense_preset"]
