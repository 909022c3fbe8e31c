"""Architecture configs of well-known towers, embedded as data so nothing has to be downloaded.

They describe shapes only (random weights when built from them): enough for parameter accounting on the
meta device and for building a model whose weights are then loaded from a local checkpoint. Values are
those of the public ``facebook/dinov2-*``, ``openai/clip-vit-*`` and ``google/siglip-*`` configs (the
vision half of the dual encoders). Each ``model_type`` must be in the backbone registry.

The configs a VLM preset also uses (DINOv2-S, CLIP-L/336) are stored once, as the released ``config.json``
values in ``llava_vitsplit/presets/configs/`` (each file's source model is in ``sources.json`` there), and
read from there; the other sizes are written here by shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RELEASED_CONFIG_DIR = Path(__file__).resolve().parent.parent / "presets" / "configs"


def released_config(name: str) -> dict[str, Any]:
    """The released config stored as ``presets/configs/<name>.json`` (read as a file: no preset import)."""
    return json.loads((RELEASED_CONFIG_DIR / f"{name}.json").read_text())


DINOV2_SMALL = released_config("dinov2-small")  # facebook/dinov2-small

_DINOV2 = {
    "model_type": "dinov2",
    "image_size": 518,
    "patch_size": 14,
    "mlp_ratio": 4,
    "layerscale_value": 1.0,
}
_DINOV2_SIZES = {
    "small": {key: DINOV2_SMALL[key] for key in ("hidden_size", "num_hidden_layers", "num_attention_heads")},
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
BACKBONE_CONFIGS["dinov2-small"] = DINOV2_SMALL
BACKBONE_CONFIGS["clip-vit-large-patch14-336"] = released_config("clip-vit-large-patch14-336")
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
