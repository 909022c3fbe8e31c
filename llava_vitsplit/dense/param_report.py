"""Parameter counts of a dense preset per component, from a model built on the meta device (nothing allocated)."""

from __future__ import annotations

import torch

from llava_vitsplit.dense.build import build_backbone, build_detector, build_model
from llava_vitsplit.dense.presets import DensePreset, get_dense_preset


def dense_param_report(name: str | DensePreset) -> dict[str, dict[str, int]]:
    """Trainable / frozen parameter counts per component, built on the meta device.

    Components: ``backbone`` (frozen tower), ``task_head`` (copied blocks), ``prior_head`` (with the
    sparse gate if any), ``fusion``, ``head`` (segmentation/depth head, or for detection the neck) and,
    for detection, ``detector`` (RPN + RoI heads); ``total`` sums them.
    """
    preset = name if isinstance(name, DensePreset) else get_dense_preset(name)
    with torch.device("meta"):
        backbone = build_backbone(preset.backbone)
        if preset.task == "detection":
            detector = build_detector(preset, backbone)
            det_backbone = detector.backbone
            adapter, head = det_backbone.adapter, det_backbone.neck
            rest = [detector.rpn, detector.roi_heads]
        else:
            model = build_model([preset], backbone)
            branch = next(iter(model.branches.values()))
            adapter, head = branch.adapter, branch.head
            rest = []

    def count(*modules) -> dict[str, int]:
        params = [p for m in modules if m is not None for p in m.parameters()]
        return {
            "trainable": sum(p.numel() for p in params if p.requires_grad),
            "frozen": sum(p.numel() for p in params if not p.requires_grad),
        }

    report = {
        "backbone": count(backbone),
        "task_head": count(adapter.task_head),
        "prior_head": count(adapter.prior_head, adapter.prior_gate),
        "fusion": count(adapter.fusion),
        "head": count(head),
    }
    if rest:
        report["detector"] = count(*rest)
    report["total"] = {k: sum(v[k] for v in report.values()) for k in ("trainable", "frozen")}
    return report
