"""Build backbones, adapters and whole dense models from a ``DensePreset`` (heads: ``dense.tasks``).

A model that normalises its own inputs (Mask R-CNN) takes the backbone's ``Normalization``
(``backbones.normalization.backbone_normalization``; the trainer and the checkpoint loader pass the one
the run uses, the default is the preset backbone family's).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llava_vitsplit.adapter import AdapterConfig, ViTSplitAdapter
from llava_vitsplit.backbones.base import FrozenBackbone
from llava_vitsplit.backbones.configs import as_backbone_config
from llava_vitsplit.backbones.normalization import backbone_normalization
from llava_vitsplit.backbones.registry import Normalization
from llava_vitsplit.dense.model import DenseModel, TaskBranch
from llava_vitsplit.dense.presets import DensePreset
from llava_vitsplit.dense.tasks import task_spec
from llava_vitsplit.dense.tasks.mask_rcnn import build_preset_detector


def build_backbone(
    spec: str | dict[str, Any], weights: str | Path | None = None, torch_dtype: torch.dtype = torch.float32
) -> FrozenBackbone:
    """A frozen backbone from an embedded config name or config dict, loading ``weights`` if given.

    ``weights``: a transformers checkpoint folder of a family in the backbone registry (DINOv2, CLIP,
    SigLIP ...; ``llava_vitsplit.backbones.registry``), or for
    ``{"model_type": "open_clip", "model_name": ...}`` an open_clip weights file. Without weights the
    tower is randomly initialised (tests, parameter accounting). A checkpoint whose width or depth
    differs from the preset's backbone is refused, since the adapter's layer choices depend on them.
    """
    config = as_backbone_config(spec)
    if config.get("model_type") == "open_clip":
        from llava_vitsplit.backbones.open_clip import OpenClipBackbone

        if "model_name" not in config:
            raise ValueError("an open_clip backbone config needs 'model_name' (e.g. 'ViT-B-16')")
        return OpenClipBackbone.create(config["model_name"], pretrained=str(weights) if weights else None)

    from llava_vitsplit.backbones.hf import HFBackbone

    if weights is None:
        backbone = HFBackbone.from_config(config)
    else:
        backbone = HFBackbone.from_pretrained(weights, torch_dtype=torch_dtype)
        expected = (config.get("hidden_size"), config.get("num_hidden_layers"))
        got = (backbone.channels, backbone.num_layers)
        if None not in expected and expected != got:
            raise ValueError(
                f"backbone weights {weights} have width/depth {got}, but the preset's backbone "
                f"{spec if isinstance(spec, str) else config.get('model_type')} expects {expected}"
            )
    return backbone.to(torch_dtype)


def build_adapter(preset: DensePreset, backbone: FrozenBackbone) -> ViTSplitAdapter:
    """The shared ``ViTSplitAdapter`` over all of the backbone's blocks."""
    config = AdapterConfig.from_dict(preset.adapter)
    return ViTSplitAdapter(
        config, backbone.blocks, backbone.num_layers, backbone.channels, backbone.num_prefix_tokens
    )


def build_branch(preset: DensePreset, backbone: FrozenBackbone) -> TaskBranch:
    """A ``DenseModel`` branch: the preset's adapter and its task's head."""
    return task_spec(preset).build_branch(preset, build_adapter(preset, backbone))


def build_dense_model(presets: Sequence[DensePreset], backbone: FrozenBackbone) -> DenseModel:
    """One ``DenseModel`` with a branch per preset (named by preset name), all on ``backbone``."""
    names = [p.name for p in presets]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate task branches {names}")
    return DenseModel(backbone, {p.name: build_branch(p, backbone) for p in presets})


def build_task_model(
    preset: DensePreset, backbone: FrozenBackbone, normalization: Normalization | None = None
) -> nn.Module:
    """The model one preset trains: a one-branch ``DenseModel``, or its task's own model (Mask R-CNN,
    normalising with ``normalization``; ``None``: the preset backbone family's)."""
    normalization = normalization or backbone_normalization(preset.backbone)
    return task_spec(preset).make_model(preset, backbone, build_adapter(preset, backbone), normalization)


def build_detector(
    preset: DensePreset, backbone: FrozenBackbone, normalization: Normalization | None = None, **kwargs: Any
) -> nn.Module:
    """torchvision Mask R-CNN whose backbone is ``backbone`` + adapter + detection neck.

    ``preset.extra["detector"]`` holds extra ``MaskRCNN`` keyword arguments (and ``fpn_channels``);
    ``kwargs`` override them. Images are normalised with ``normalization`` (``None``: the family's).
    """
    normalization = normalization or backbone_normalization(preset.backbone)
    return build_preset_detector(preset, backbone, build_adapter(preset, backbone), normalization, **kwargs)
