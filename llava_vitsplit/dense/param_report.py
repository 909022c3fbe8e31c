"""Parameter counts of a dense preset per component, from a model built on the meta device (nothing allocated)."""

from __future__ import annotations

import torch

from llava_vitsplit.dense.build import build_backbone, build_task_model
from llava_vitsplit.dense.presets import DensePreset, get_dense_preset
from llava_vitsplit.dense.tasks import task_spec


def dense_param_report(name: str | DensePreset) -> dict[str, dict[str, int]]:
    """Trainable / frozen parameter counts per component, built on the meta device.

    Components: ``backbone`` (frozen tower), ``task_head`` (copied blocks), ``prior_head`` (with the
    sparse gate if any), ``fusion``, ``head`` (segmentation/depth head, or for detection the neck), the
    task's extra parts (detection: ``detector``, the RPN + RoI heads); ``total`` sums them.
    """
    preset = name if isinstance(name, DensePreset) else get_dense_preset(name)
    with torch.device("meta"):
        backbone = build_backbone(preset.backbone)
        adapter, head, extra = task_spec(preset).parts(build_task_model(preset, backbone))

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
    report.update({part: count(*modules) for part, modules in extra.items()})
    report["total"] = {k: sum(v[k] for v in report.values()) for k in ("trainable", "frozen")}
    return report
