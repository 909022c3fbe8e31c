"""Architecture configs of well-known towers, embedded as data so nothing has to be downloaded.

They describe shapes only (random weights when built from them): enough for parameter accounting on the
meta device and for building a model whose weights are then loaded from a local checkpoint. Values are
those of the public ``facebook/dinov2-*``, ``openai/clip-vit-*`` and ``google/siglip-*`` configs (the
vision half of the dual encoders). Each ``model_type`` must be in the backbone registry.
"""

from __future__ import annotations

from typing import Any

_DINOV2 = {
    "model_type": "dinov2",
    "image_size": 518,
    "patch_size": 14,
    "mlp_ratio": 4,
    "layerscale_value": 1.0,
}
_DINOV2_SIZES = {
    "small": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16},
    "giant": {
        "hidden_size": 1536,
        "num_hidden_layers": 40,
        "num_attention_heads": 24,
        "use_swiglu_ffn": True,
    },
}

BACKBONE_CONFIGS: dict[str, dict[str, Any]] = {}
for _size, _shape in _DINOV2_SIZES.items():
    BACKBONE_CONFIGS[f"dinov2-{_size}"] = {**_DINOV2, **_shape}
    BACKBONE_CONFIGS[f"dinov2-with-registers-{_size}"] = {
        **_DINOV2,
        **_shape,
        "model_type": "dinov2_with_registers",
        "num_register_tokens": 4,
    }
BACKBONE_CONFIGS["clip-vit-large-patch14-336"] = {
    "model_type": "clip_vision_model",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
}
BACKBONE_CONFIGS["siglip-base-patch16-224"] = {
    "model_type": "siglip_vision_model",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}


def backbone_config(name: str) -> dict[str, Any]:
    """A copy of the embedded config ``name``; unknown names raise with the valid list."""
    if name not in BACKBONE_CONFIGS:
        raise KeyError(f"unknown backbone config {name!r}; valid: {', '.join(sorted(BACKBONE_CONFIGS))}")
    return dict(BACKBONE_CONFIGS[name])


def as_backbone_config(spec: str | dict[str, Any]) -> dict[str, Any]:
    """A preset's ``backbone``: an embedded config name (a copy of it) or a config dict (a copy)."""
    return backbone_config(spec) if isinstance(spec, str) else dict(spec)
