"""Facts about transformers vision towers shared by the VLM and the dense sub-package.

Supported model types: CLIP (``clip_vision_model``/``clip``), SigLIP (``siglip_vision_model``/``siglip``)
and DINOv2 (``dinov2``, ``dinov2_with_registers``). Nothing here imports the VLM or LLM code.
"""

from __future__ import annotations

from torch import nn

_LAYER_PATHS = (
    "vision_model.encoder.layers",  # CLIPVisionModel, SiglipVisionModel
    "encoder.layers",  # CLIPVisionTransformer, SiglipVisionTransformer
    "encoder.layer",  # Dinov2Model, Dinov2WithRegistersModel
)


def encoder_layers(vision_model: nn.Module) -> nn.ModuleList:
    """The ``nn.ModuleList`` of transformer blocks inside a transformers vision model."""
    for path in _LAYER_PATHS:
        module: nn.Module | None = vision_model
        for name in path.split("."):
            module = getattr(module, name, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise TypeError(
        f"cannot find the block list of {type(vision_model).__name__}; supported: CLIP, SigLIP, DINOv2 "
        f"(looked for {', '.join(_LAYER_PATHS)})"
    )


def num_prefix_tokens(vision_config) -> int:
    """Tokens before the patch grid: CLS (+ registers for DINOv2 with registers); SigLIP has none."""
    model_type = getattr(vision_config, "model_type", "")
    if model_type.startswith("siglip"):
        return 0
    if model_type.startswith("dinov2"):
        return 1 + int(getattr(vision_config, "num_register_tokens", 0) or 0)
    if model_type.startswith("clip"):
        return 1
    raise ValueError(f"unsupported vision model_type {model_type!r}; supported: clip, siglip, dinov2")


def effective_depth(num_layers: int, feature_layer: int) -> int:
    """Blocks actually run for a LLaVA ``vision_feature_layer`` (hidden-state index, may be negative).

    ``hidden_states`` has ``num_layers + 1`` entries, so layer -2 of a 24-block tower is ``h[23]``:
    blocks 0..22 run and the last block is never used.
    """
    depth = feature_layer if feature_layer >= 0 else num_layers + 1 + feature_layer
    if not 1 <= depth <= num_layers:
        raise ValueError(
            f"vision_feature_layer={feature_layer} is out of range for a {num_layers}-block tower"
        )
    return depth


def truncate_layers(vision_model: nn.Module, depth: int) -> None:
    """Drop the blocks past ``depth`` in place so they are never run, stored or loaded."""
    layers = encoder_layers(vision_model)
    if depth > len(layers):
        raise ValueError(f"cannot keep {depth} blocks of a tower with {len(layers)}")
    del layers[depth:]
