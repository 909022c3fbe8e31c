"""Frozen transformers vision towers (every family in the backbone registry) behind ``FrozenBackbone``.

Hidden states come from the model's own ``output_hidden_states=True``. The model class, the block list,
the prefix-token count, the final norm and whether the forward needs ``interpolate_pos_encoding`` all
come from the tower's ``BackboneSpec`` (``llava_vitsplit.backbones.registry``, which also says why each
family's ``norm`` is what it is: DINOv2's ``layernorm``, SigLIP's ``post_layernorm``, none for CLIP).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from llava_vitsplit.backbones.base import FrozenBackbone
from llava_vitsplit.backbones.registry import backbone_spec, load_vision_model, supported_model_types


def config_from_dict(data: dict[str, Any]):
    """A transformers config from a plain dict with ``model_type`` (``dinov2``, ``clip_vision_model`` ...)."""
    from transformers import AutoConfig

    data = dict(data)
    model_type = data.pop("model_type", None)
    if model_type is None:
        raise ValueError(
            f"backbone config needs a 'model_type' (one of {', '.join(supported_model_types())})"
        )
    return AutoConfig.for_model(backbone_spec(model_type).model_type, **data)


class HFBackbone(FrozenBackbone):
    """Wraps a registered transformers vision model (``Dinov2Model``, ``CLIPVisionModel`` ...) as a frozen backbone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        config = model.config
        self.spec = backbone_spec(config.model_type)
        if not isinstance(model, self.spec.model_cls()):
            raise TypeError(f"pass the vision model ({self.spec.model_class}), not {type(model).__name__}")
        self.model = model
        self.num_layers = int(config.num_hidden_layers)
        self.channels = int(config.hidden_size)
        self.patch_size = int(config.patch_size)
        self.num_prefix_tokens = self.spec.prefix_tokens(config)
        self.norm = self.spec.norm(model)
        self.freeze()

    @property
    def blocks(self) -> nn.ModuleList:
        return self.spec.blocks(self.model)

    @classmethod
    def from_config(cls, config) -> HFBackbone:
        """Randomly initialised tower from a transformers config or a plain dict (tests, meta-device counts)."""
        if isinstance(config, dict):
            config = config_from_dict(config)
        return cls(backbone_spec(config.model_type).model_cls()(config))

    @classmethod
    def from_pretrained(cls, path: str | Path, torch_dtype: torch.dtype = torch.float32) -> HFBackbone:
        """Load a local transformers checkpoint (a DINOv2 folder, a CLIP / SigLIP vision or full folder)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no transformers checkpoint at {path} (missing {path / 'config.json'})")
        return cls(load_vision_model(str(path), torch_dtype))

    def _hidden_states(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kwargs = {"interpolate_pos_encoding": True} if self.spec.interpolate_pos_encoding else {}
        out = self.model(pixel_values=pixel_values, output_hidden_states=True, **kwargs)
        return tuple(out.hidden_states)  # L + 1 x [B, P + h*w, C]
