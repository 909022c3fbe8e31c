"""Rebuild trained dense models from checkpoints, sharing one frozen backbone between them.

Segmentation and depth checkpoints that were trained on the same backbone become branches of one
``DenseModel`` (one frozen pass feeds every branch); detection checkpoints become Mask R-CNN models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from llava_vitsplit.dense.build import build_backbone, build_detector, build_model
from llava_vitsplit.dense.checkpoint import frozen_prefix, load_checkpoint, load_trainable
from llava_vitsplit.dense.model import DenseModel
from llava_vitsplit.dense.presets import DensePreset


@dataclass
class LoadedModels:
    dense: DenseModel | None = None
    dense_presets: list[DensePreset] = field(default_factory=list)
    detectors: list[tuple[DensePreset, nn.Module]] = field(default_factory=list)


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
    dense = [p for p in payloads if p["presets"][0]["task"] != "detection"]
    for payload in payloads:
        if payload["presets"][0]["task"] == "detection":
            preset = DensePreset.from_dict(payload["presets"][0])
            model = build_detector(preset, _backbone(payload["backbone"], backbone_weights))
            load_trainable(model, payload["model"], frozen_prefix("detection"), payload["path"])
            loaded.detectors.append((preset, model.to(device).eval()))
    if dense:
        first = dense[0]
        for other in dense[1:]:
            if not _same_backbone(first["backbone"], other["backbone"]):
                raise ValueError(
                    f"{other['path']} was trained on a different backbone than {first['path']}; "
                    "multi-task inference needs one shared frozen backbone"
                )
        presets = [DensePreset.from_dict(p["presets"][0]) for p in dense]
        model = build_model(presets, _backbone(first["backbone"], backbone_weights))
        state: dict[str, torch.Tensor] = {}
        for payload in dense:
            state.update(payload["model"])
        load_trainable(model, state, frozen_prefix("segmentation"), ", ".join(p["path"] for p in dense))
        loaded.dense, loaded.dense_presets = model.to(device).eval(), presets
    return loaded
