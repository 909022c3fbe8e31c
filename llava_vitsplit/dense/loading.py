"""Rebuild trained dense models from checkpoints, sharing one frozen backbone between them.

Checkpoints of branch tasks (segmentation, depth: ``DenseTaskSpec.branch``) that were trained on the same
backbone become branches of one ``DenseModel`` (one frozen pass feeds every branch); checkpoints of
tasks with their own model (detection: Mask R-CNN) become one model each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from llava_vitsplit.dense.build import build_backbone, build_dense_model, build_task_model
from llava_vitsplit.dense.checkpoint import load_checkpoint, load_trainable
from llava_vitsplit.dense.model import DenseModel
from llava_vitsplit.dense.presets import DensePreset
from llava_vitsplit.dense.tasks import task_spec


@dataclass
class LoadedModels:
    dense: DenseModel | None = None  # every branch-task checkpoint, one branch each
    dense_presets: list[DensePreset] = field(default_factory=list)
    standalone: list[tuple[DensePreset, nn.Module]] = field(default_factory=list)  # own-model tasks


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
        if spec.branch is not None:
            branches.append(payload)
            continue
        model = build_task_model(preset, _backbone(payload["backbone"], backbone_weights))
        load_trainable(model, payload["model"], spec.frozen_prefix, payload["path"])
        loaded.standalone.append((preset, model.to(device).eval()))
    if branches:
        loaded.dense, loaded.dense_presets = _load_branches(branches, backbone_weights, device)
    return loaded
