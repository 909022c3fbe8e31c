"""What a stage-1 connector was trained for, so stage 2 can refuse one trained for other parts.

A connector maps one tower's hidden states (a given architecture, depth and feature layer, at one image
size) into one LLM's embedding space; loaded next to another tower or LLM it trains silently into
nonsense. ``part_provenance`` records, next to the connector: the names or paths the tower and LLM came
from (local paths made absolute), the tower's architecture, block count, effective depth, image and patch
size, the LLM's architecture, depth and width, and a SHA-256 of the tower weights the connector reads
(hashed as bfloat16, so a float32 and a bfloat16 load of the same checkpoint agree).

The content decides: ``provenance_mismatch`` names every content entry that differs (weights hash,
architectures, depths, sizes, vocabulary). The names or paths (``SOURCE_KEYS``) only say where the parts
were read from: the same folders copied to another cluster or home directory hold the same parts, so
``provenance_moved`` reports them apart, for a logged note rather than a refusal.
"""

from __future__ import annotations

import hashlib
import os

import torch

TOWER_HASH = "vision_weights_sha256"
SOURCE_KEYS = ("vision_tower", "language_model")  # where the parts were read from, not what they are


def source_name(name_or_path: str) -> str:
    """A hub id as given; a local folder as its absolute path (so ``./x`` and ``/abs/x`` agree)."""
    return os.path.abspath(name_or_path) if os.path.exists(name_or_path) else name_or_path


def tower_weights_sha256(tower: torch.nn.Module) -> str:
    """SHA-256 over the tower's tensors (names, shapes, bfloat16 values), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tower.state_dict().items()):
        if tensor.numel() == 0:
            raise ValueError(
                f"cannot hash the vision tower: {name} is partitioned (empty); hash before ZeRO-3"
            )
        values = tensor.detach().to("cpu", torch.bfloat16).contiguous()
        digest.update(f"{name}:{tuple(values.shape)};".encode())
        digest.update(values.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def part_provenance(model, vision_tower: str, language_model: str) -> dict:
    """The identity of ``model``'s tower and LLM, as saved next to a stage-1 connector."""
    vision, text = model.config.vision_config, model.config.text_config
    return {
        "vision_tower": source_name(vision_tower),
        "language_model": source_name(language_model),
        "vision_model_type": vision.model_type,
        "vision_num_hidden_layers": vision.num_hidden_layers,
        "vision_depth": model.model.vision_depth,
        "image_size": vision.image_size,
        "patch_size": vision.patch_size,
        "text_model_type": text.model_type,
        "text_num_hidden_layers": text.num_hidden_layers,
        "text_vocab_size": text.vocab_size,
        TOWER_HASH: tower_weights_sha256(model.model.vision_tower),
    }


def _differences(saved: dict, current: dict, keys) -> dict[str, tuple]:
    return {
        key: (saved.get(key, "(not recorded)"), current[key])
        for key in keys
        if _comparable(saved.get(key)) != _comparable(current[key])
    }


def provenance_mismatch(saved: dict, current: dict) -> dict[str, tuple]:
    """``{key: (saved, current)}`` for every content entry that differs (or was not recorded)."""
    return _differences(saved, current, [key for key in current if key not in SOURCE_KEYS])


def provenance_moved(saved: dict, current: dict) -> dict[str, tuple]:
    """``{key: (saved, current)}`` for each part read from another name or path than at stage 1."""
    return _differences(saved, current, [key for key in SOURCE_KEYS if key in current])


def _comparable(value):
    return list(value) if isinstance(value, tuple) else value  # JSON turns tuples into lists
