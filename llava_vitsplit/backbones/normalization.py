"""The input normalisation (mean / std) a dense backbone expects, resolved without building the model.

``backbone_normalization(spec, weights)`` for a preset's ``backbone`` (embedded config name or dict):

- a transformers family (``registry``): the ``image_mean`` / ``image_std`` of ``preprocessor_config.json``
  in the ``weights`` folder when it has them (the checkpoint's own preprocessing wins), else the
  family's ``BackboneSpec.normalization``;
- ``{"model_type": "open_clip", "model_name": ...}``: open_clip's own preprocessing for that model: the
  mean/std its pretrained tags ship with (``"pretrained_tag"`` in the config picks one where the tags
  disagree), or open_clip's default (OpenAI's CLIP values) for a model without tags.

Datasets are built before the model, so this reads configs only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llava_vitsplit.backbones.configs import as_backbone_config
from llava_vitsplit.backbones.registry import Normalization, backbone_spec

PREPROCESSOR_FILE = "preprocessor_config.json"


def backbone_normalization(spec: str | dict[str, Any], weights: str | Path | None = None) -> Normalization:
    """The mean/std of the backbone ``spec`` with ``weights`` (a folder or file, or ``None``: random)."""
    config = as_backbone_config(spec)
    if config.get("model_type") == "open_clip":
        if "model_name" not in config:
            raise ValueError("an open_clip backbone config needs 'model_name' (e.g. 'ViT-B-16')")
        return open_clip_normalization(config["model_name"], config.get("pretrained_tag"))
    family = backbone_spec(config.get("model_type", "")).normalization
    own = preprocessor_normalization(weights) if weights is not None else None
    return own or family


def preprocessor_normalization(folder: str | Path) -> Normalization | None:
    """``image_mean`` / ``image_std`` of a transformers checkpoint's ``preprocessor_config.json``, if both."""
    path = Path(folder) / PREPROCESSOR_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if data.get("image_mean") is None or data.get("image_std") is None:
        return None
    return Normalization(tuple(data["image_mean"]), tuple(data["image_std"]))


def open_clip_normalization(model_name: str, pretrained_tag: str | None = None) -> Normalization:
    """open_clip's preprocessing mean/std for ``model_name`` (and ``pretrained_tag``, where given)."""
    import open_clip

    default = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD  # open_clip's PreprocessCfg

    def of(tag: str) -> Normalization:
        cfg = open_clip.get_pretrained_cfg(model_name, tag)
        return Normalization(tuple(cfg.get("mean") or default[0]), tuple(cfg.get("std") or default[1]))

    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained_tag is not None:
        if pretrained_tag not in tags:
            raise ValueError(
                f"unknown open_clip pretrained tag {pretrained_tag!r} for {model_name}; valid: {', '.join(tags)}"
            )
        return of(pretrained_tag)
    found = {tag: of(tag) for tag in tags}
    distinct = set(found.values())
    if len(distinct) > 1:
        listed = "; ".join(f"{tag}: {n.mean} / {n.std}" for tag, n in found.items())
        raise ValueError(
            f"open_clip {model_name}'s pretrained tags use different normalisations ({listed}); "
            "name the weights' tag with 'pretrained_tag' in the backbone config"
        )
    return distinct.pop() if distinct else Normalization(*default)
