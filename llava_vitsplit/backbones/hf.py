"""Frozen transformers vision towers (DINOv2, DINOv2 with registers, CLIP) behind ``FrozenBackbone``.

Hidden states come from the model's own ``output_hidden_states=True``; DINOv2's final ``layernorm`` is
exposed as ``norm`` (the dense heads apply it to task-head and prior features, as in the released dense
code). CLIP's ``post_layernorm`` is trained for the pooled CLS token only, so ``norm`` is ``None`` there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from llava_vitsplit.backbones.base import FrozenBackbone
from llava_vitsplit.backbones.hf_layers import encoder_layers, num_prefix_tokens

SUPPORTED_MODEL_TYPES = ("dinov2", "dinov2_with_registers", "clip_vision_model", "clip")


def _model_class(model_type: str):
    import transformers

    classes = {
        "dinov2": transformers.Dinov2Model,
        "dinov2_with_registers": transformers.Dinov2WithRegistersModel,
        "clip_vision_model": transformers.CLIPVisionModel,
        "clip": transformers.CLIPVisionModel,
    }
    if model_type not in classes:
        raise ValueError(
            f"unsupported vision model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return classes[model_type]


def config_from_dict(data: dict[str, Any]):
    """A transformers config from a plain dict with ``model_type`` (``dinov2``, ``clip_vision_model`` ...)."""
    from transformers import AutoConfig

    data = dict(data)
    model_type = data.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"backbone config needs a 'model_type' (one of {', '.join(SUPPORTED_MODEL_TYPES)})")
    if model_type == "clip":
        model_type = "clip_vision_model"
    _model_class(model_type)
    return AutoConfig.for_model(model_type, **data)


class HFBackbone(FrozenBackbone):
    """Wraps a ``Dinov2Model`` / ``Dinov2WithRegistersModel`` / ``CLIPVisionModel`` as a frozen backbone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        config = model.config
        if getattr(config, "model_type", "") == "clip":
            raise TypeError("pass the CLIP vision model (CLIPVisionModel), not the full CLIPModel")
        _model_class(config.model_type)
        self.model = model
        self.num_layers = int(config.num_hidden_layers)
        self.channels = int(config.hidden_size)
        self.patch_size = int(config.patch_size)
        self.num_prefix_tokens = num_prefix_tokens(config)
        self.is_clip = config.model_type.startswith("clip")
        self.norm = None if self.is_clip else model.layernorm
        self.freeze()

    @property
    def blocks(self) -> nn.ModuleList:
        return encoder_layers(self.model)

    @classmethod
    def from_config(cls, config) -> HFBackbone:
        """Randomly initialised tower from a transformers config or a plain dict (tests, meta-device counts)."""
        if isinstance(config, dict):
            config = config_from_dict(config)
        return cls(_model_class(config.model_type)(config))

    @classmethod
    def from_pretrained(cls, path: str | Path, torch_dtype: torch.dtype = torch.float32) -> HFBackbone:
        """Load a local transformers checkpoint (a DINOv2 folder, a CLIP vision or full CLIP folder)."""
        from transformers import AutoConfig

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no transformers checkpoint at {path} (missing {path / 'config.json'})")
        config = AutoConfig.from_pretrained(path)
        model_type = "clip_vision_model" if config.model_type == "clip" else config.model_type
        model = _model_class(model_type).from_pretrained(path, dtype=torch_dtype)
        return cls(model)

    def _hidden_states(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kwargs = {"interpolate_pos_encoding": True} if self.is_clip else {}
        out = self.model(pixel_values=pixel_values, output_hidden_states=True, **kwargs)
        return tuple(out.hidden_states)  # L + 1 x [B, P + h*w, C]
