"""Facts about transformers vision towers shared by the VLM and the dense sub-package.

Read from the backbone registry (``llava_vitsplit.backbones.registry``: CLIP, SigLIP, DINOv2 with and
without registers, and whatever else is registered). Nothing here imports the VLM or LLM code.
"""

from __future__ import annotations

from torch import nn

from llava_vitsplit.backbones.registry import backbone_spec, spec_for_model


def encoder_layers(vision_model: nn.Module) -> nn.ModuleList:
    """The ``nn.ModuleList`` of transformer blocks inside a transformers vision model."""
    return spec_for_model(vision_model).blocks(vision_model)


def num_prefix_tokens(vision_config) -> int:
    """Tokens before the patch grid: CLS (+ registers for DINOv2 with registers); SigLIP has none."""
    return backbone_spec(getattr(vision_config, "model_type", "")).prefix_tokens(vision_config)


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
