"""Rebuild trained dense models from checkpoints, sharing one frozen backbone between them.

Checkpoints of branch tasks (segmentation, depth: ``DenseTaskSpec.branch``) that were trained on the same
backbone become branches of one ``DenseModel`` (one frozen pass feeds every branch); checkpoints of
tasks with their own model (detection: Mask R-CNN) become one model each. Each model's input
normalisation is the one its checkpoint recorded (``checkpoint.recorded_normalization``), whatever
``backbone_weights`` overrides: evaluation and prediction normalise exactly as training did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from llava_vitsplit.backbones.registry import Normalization
from llava_vitsplit.dense.build import build_backbone, build_dense_model, build_task_model
from llava_vitsplit.dense.checkpoint import load_checkpoint, load_trainable, recorded_normalization
from llava_vitsplit.dense.model import DenseModel
from llava_vitsplit.dense.presets import DensePreset
from llava_vitsplit.dense.tasks import task_spec


@dataclass
class LoadedModels:
    dense: DenseModel | None = None  # every branch-task checkpoint, one branch each
    dense_presets: list[DensePreset] = field(default_factory=list)
    standalone: list[tuple[DensePreset, nn.Module]] = field(default_factory=list)  # own-model tasks
    # preset name -> the input normalisation its checkpoint was trained with (eval / predict transforms)
    normalization: dict[str, Normalization] = field(default_factory=dict)


def _same_backbone(a: dict, b: dict) -> bool:
    if a["spec"] != b["spec"] or a.get("weights") != b.get("weights"):
        return False
    sa, sb = a.get("state_dict"), b.get("state_dict")
    if sa is None or sb is None:
        return sa is sb
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _backbone(source: dict, weights: str | Path | None):
    backbone = build_backbone(source["spec"], weights or source.get("weights"))
    if source.get("state_dict") is not None and weights is None:
        backbone.load_state_dict(source["state_dict"])
    return backbone


def _load_branches(payloads: list[dict], weights: str | Path | None, device) -> tuple[DenseModel, list]:
    """One ``DenseModel`` with a branch per checkpoint; they must share one frozen backbone."""
    first = payloads[0]
    for other in payloads[1:]:
        if not _same_backbone(first["backbone"], other["backbone"]):
            raise ValueError(
                f"{other['path']} was trained on a different backbone than {first['path']}; "
                "multi-task inference needs one shared frozen backbone"
            )
        if recorded_normalization(other["backbone"]) != recorded_normalization(first["backbone"]):
            raise ValueError(
                f"{other['path']} was trained with another input normalisation than {first['path']}; "
                "multi-task inference feeds every branch the same normalised image"
            )
    presets = [DensePreset.from_dict(p["presets"][0]) for p in payloads]
    model = build_dense_model(presets, _backbone(first["backbone"], weights))
    state: dict[str, torch.Tensor] = {}
    for payload in payloads:
        state.update(payload["model"])
    prefix = task_spec(presets[0]).frozen_prefix
    load_trainable(model, state, prefix, ", ".join(p["path"] for p in payloads))
    return model.to(device).eval(), presets


def load_models(
    checkpoints: Sequence[str | Path],
    backbone_weights: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModels:
    """Load every checkpoint (file, or run folder -> its latest); ``backbone_weights`` overrides the stored path."""
    if not checkpoints:
        raise ValueError("give at least one checkpoint")
    payloads = [load_checkpoint(c) for c in checkpoints]
    loaded = LoadedModels()
    branches = []
    for payload in payloads:
        preset = DensePreset.from_dict(payload["presets"][0])
        spec = task_spec(preset)
        normalization = recorded_normalization(payload["backbone"])
        loaded.normalization[preset.name] = normalization
        if spec.branch is not None:
            branches.append(payload)
            continue
        backbone = _backbone(payload["backbone"], backbone_weights)
        model = build_task_model(preset, backbone, normalization)
        load_trainable(model, payload["model"], spec.frozen_prefix, payload["path"])
        loaded.standalone.append((preset, model.to(device).eval()))
    if branches:
        loaded.dense, loaded.dense_presets = _load_branches(branches, backbone_weights, device)
    return loaded
